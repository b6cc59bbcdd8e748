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
def snakemake_task(smk, skip_teardown=False):
    """Set up logging and threads for a Snakemake ``script:`` job.

    A bad input (InputError) or an output that cannot be written (OutputError, or an
    OSError that says so) is the user's to fix, not a bug: its message alone goes to
    stderr, which Snakemake shows, and the traceback only to the task's log; the task then
    exits with status 1. Any other error is logged and re-raised with its traceback.

    With ``skip_teardown`` a task that succeeded ends its process at once, after flushing
    the log and the standard streams, without the interpreter's teardown: with PyTorch
    loaded that teardown takes 0.5-0.75 s (measured), a tenth of an inference task of
    300k cells. Only for tasks whose outputs are closed and renamed in the with block.
    """
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
        from .errors import describe_write_error

        message = describe_write_error(err)
        if message is None:
            log.error("%s: %s", type(err).__name__, err)
            raise
        _stop_for_the_user(log, handlers, message)
    except Exception as err:
        from .errors import InputError, OutputError

        if isinstance(err, (InputError, OutputError)):
            _stop_for_the_user(log, handlers, str(err))
        log.error("%s: %s", type(err).__name__, err)
        raise
    log.info("done")
    if skip_teardown:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _stop_for_the_user(log, handlers, message):
    """Log ``message`` (stderr and the log file), append the traceback to the log file
    only, and end the task with exit status 1 (SystemExit prints no traceback)."""
    log.error("%s", message)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "the traceback, for a bug report:", None,
                            sys.exc_info())
    for handler in handlers[1:]:  # the log file only
        handler.handle(record)
    raise SystemExit(1) from None
