"""g, r, z flux images -> a colour picture that looks like Galaxy10 DECaLS / Legacy Survey cutouts.

The Galaxy10 DECaLS images are the Legacy Survey viewer's colour JPEGs: z as red, r as
green, g as blue, each band multiplied by a weight that balances the survey's noise,
then an asinh stretch of the summed intensity (Lupton et al. 2004) that keeps colours
while compressing bright cores. ``astropy.visualization.make_lupton_rgb`` implements
that stretch; this module only fixes the band weights and the stretch constants, and
works in surface-brightness units so that images at any pixel scale (a survey field at
0.262"/px, a cutout resampled for the model) come out with the same look.
"""

from __future__ import annotations

import numpy as np

#: Legacy Survey / DECaLS pixel scale, arcsec per pixel (also Galaxy10 DECaLS).
DECALS_PXSCALE_ARCSEC = 0.262

#: DECaLS-like 1-sigma sky noise per 0.262" pixel in nanomaggies, g, r, z (5-sigma point
#: source depths g 24.0, r 23.4, z 22.5 in 1.3" seeing). Uncalibrated images are scaled
#: to this noise so that the colour stretch treats them like the survey.
DECALS_SKY_SIGMA_NMGY: tuple[float, float, float] = (0.0067, 0.0117, 0.027)

#: Per-band weights (g, r, z) applied to flux in nanomaggies per 0.262" pixel; they make
#: the three bands' sky noise about equal, as the Legacy Survey viewer's weights do.
BAND_WEIGHTS_GRZ = (6.0, 3.4, 2.2)

#: asinh stretch constants tuned so the synthetic sky noise is a dark speckle and
#: galaxy outskirts stay visible while cores reach white (as in Galaxy10 images).
LUPTON_Q = 12.0
LUPTON_STRETCH = 0.8
#: Offset (in weighted units) added before the stretch so that sky noise shows as a
#: faint grey speckle around zero instead of being clipped to black.
SKY_OFFSET = 0.03


def grz_to_rgb(
    flux_grz: np.ndarray,
    pxscale_arcsec: float,
    *,
    q: float = LUPTON_Q,
    stretch: float = LUPTON_STRETCH,
) -> np.ndarray:
    """Colour composite (H, W, 3) uint8 of g, r, z flux images.

    Args:
        flux_grz: float array (3, H, W), axes "CYX", channels g, r, z, in nanomaggies
            per pixel (22.5 mag zero point), sky-subtracted.
        pxscale_arcsec: pixel scale of ``flux_grz`` in arcsec/px. Fluxes are turned into
            surface brightness first, so one galaxy looks the same at any pixel scale.
        q, stretch: asinh softening and linear stretch (astropy's Lupton parameters).

    Returns:
        uint8 (H, W, 3) RGB with R = z, G = r, B = g.
    """
    from astropy.visualization import make_lupton_rgb

    flux_grz = np.asarray(flux_grz, dtype=np.float32)
    if flux_grz.ndim != 3 or flux_grz.shape[0] != 3:
        msg = f"expected g, r, z images as (3, H, W), got shape {flux_grz.shape}"
        raise ValueError(msg)
    # flux per pixel -> flux per native DECaLS pixel of the same surface brightness
    to_native = (DECALS_PXSCALE_ARCSEC / float(pxscale_arcsec)) ** 2
    g, r, z = (
        flux_grz[i] * np.float32(BAND_WEIGHTS_GRZ[i] * to_native) + np.float32(SKY_OFFSET)
        for i in range(3)
    )
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides where I <= 0 too
        return make_lupton_rgb(z, r, g, minimum=0.0, stretch=stretch, Q=q)
