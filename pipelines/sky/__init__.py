"""Survey-image analysis: background, source detection, star/galaxy separation, cutouts.

Core dependencies only (numpy, sep, astropy, scipy, scikit-image): the detect-classify
runner and the galaxy generator both build on this package, without torch.
"""
