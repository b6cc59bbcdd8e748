"""What every entry script does first: log to the rule's log file, honour ``threads``.

Standard library only, and it must run before NumPy is imported: BLAS libraries read
their thread count from the environment once, at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def snakemake_task(smk):
    """Set up logging and threads for a Snakemake ``script:`` job; log any error, then re-raise."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(max(1, int(smk.threads)))
    handlers = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(str(smk.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"shardmap.{smk.rule}")
    log.info("rule %s, wildcards %s, threads %s", smk.rule, dict(smk.wildcards.items()), smk.threads)
    try:
        yield log
    except OSError as err:
        from .errors import OutputError, describe_write_error

        message = describe_write_error(err)
        if message is None:
            log.error("%s: %s", type(err).__name__, err)
            raise
        log.error("%s", message)
        raise OutputError(message) from err
    except Exception as err:
        log.error("%s: %s", type(err).__name__, err)
        raise
    log.info("done")
