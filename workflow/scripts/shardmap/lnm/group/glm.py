"""The voxelwise GLM of the specificity test and its statistic under permutation.

Model, at every voxel: map = b0 + b1 * case + covariates + error; the statistic is the
t of b1 (cases > controls). Permutations follow Freedman and Lane (1983), the scheme of
nilearn's ``permuted_ols``: the maps' residuals after the nuisance (intercept and
covariates) are permuted across lesions and the full model is refitted. With the case
variable residualised on the nuisance (x) and the nuisance's own columns orthonormal (q),
the refit of permuted, unit-norm residuals y costs dot products only:

    b = x . y_perm,  c = q' y_perm,  rss = 1 - b^2 - |c|^2,  t = b * sqrt(dof / rss)

with dof = n - 2 - k for k covariates. The dot products of a block of permutations with
a tile of voxels form one matrix product, which is what makes a permutation task fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError

# Voxels per tile of the stored residuals. Tiles are aligned to the mask order, so a task
# that covers a chunk of voxels computes exactly the products of a task covering them all.
VOXEL_TILE = 2048


@dataclass
class PreparedGLM:
    """The design reduced to what the permutation statistic needs."""

    x: np.ndarray  # (n,) case variable residualised on the nuisance, unit norm
    basis: np.ndarray  # (n, 1 + k) orthonormal basis of the nuisance, intercept first
    dof: int

    @property
    def q(self):
        """The nuisance's orthonormal columns after the intercept (all orthogonal to it)."""
        return self.basis[:, 1:]

    @property
    def n_lesions(self):
        return int(self.x.size)


def prepare_glm(design):
    """Residualise the case variable on the intercept and covariates (design.Design)."""
    nuisance = np.column_stack([np.ones(design.n_lesions), design.covariates])
    basis, _ = np.linalg.qr(nuisance)
    x = design.case - basis @ (basis.T @ design.case)
    norm = np.linalg.norm(x)
    if norm <= 1e-8 * np.sqrt(design.n_lesions):
        raise InputError("lnm.specificity: case vs control is explained entirely by the covariates "
                         f"{design.covariate_names}; drop covariates.")
    dof = design.n_lesions - 2 - len(design.covariate_names)
    if dof < 1:
        raise InputError(f"lnm.specificity: {design.n_lesions} lesions leave no degree of freedom for "
                         f"{len(design.covariate_names)} covariate(s); use more lesions or fewer covariates.")
    return PreparedGLM(x / norm, basis, dof)


# A voxel whose residual after the nuisance is below this fraction of its norm before has
# no variance left but rounding (a map constant over lesions): its t is 0.
NO_VARIANCE_RTOL = 1e-10
# Where the model fits a voxel exactly (a map that is a + b * case), the residual sum of
# squares is rounding; it is floored at this fraction of the voxel's variance, so |t| is at
# most sqrt(dof) * 1e6: finite, and the same for the unpermuted data and any permutation
# that leaves the design unchanged.
RSS_FLOOR = 1e-12


def residualise_tile(glm, tile):
    """Residualise a (n, voxels) tile of maps on the nuisance and scale each voxel's residual
    to unit norm, in place; a voxel with no variance left stays 0 (its t is 0)."""
    before = np.sqrt(np.einsum("ij,ij->j", tile, tile))
    tile -= glm.basis @ (glm.basis.T @ tile)
    norms = np.sqrt(np.einsum("ij,ij->j", tile, tile))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > NO_VARIANCE_RTOL * before)
    tile *= scale
    return tile


def t_from_products(b, c_squared, dof):
    """t of the case effect from b = x . y and the summed squares of c = q' y."""
    rss = np.maximum(1.0 - b * b - c_squared, RSS_FLOOR)
    return b * np.sqrt(dof / rss)


def observed_t(glm, residual_tile):
    """t of the unpermuted data over a residualised tile (there c = 0: y is orthogonal to q)."""
    b = glm.x @ residual_tile
    return t_from_products(b, 0.0, glm.dof)

