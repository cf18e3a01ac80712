"""Single-atom-catalyst screening: eDOS data, d-band descriptors, CHE thermodynamics, plots.

numpy/scipy/matplotlib only (core dependencies); nothing here imports torch. Modules:

- ``layout``: the published eDOS array layout ([4000 energies, 9 orbitals, 6 atomic channels]),
  metals with their periodic-table positions, supports and adsorbates.
- ``io``: read/write eDOS datasets (HDF5, zarr, npz/npy per sample); ``vasp``: DOSCAR converter.
- ``descriptors``: d-band centre and width from an eDOS array.
- ``che``: CO2RR path, computational hydrogen electrode, limiting potentials.
- ``scaling``: hybrid scaling relations G_Z = a_Z G_CO + b_Z G_OH + c_Z.
- ``screening``: predictions -> ranked candidates, fits, figures; ``explain``: occlusion and
  orbital-shifting experiments; ``plots``: the matplotlib figures (Agg).
"""
