"""Single-atom-catalyst screening CNN (Yang et al.): adsorption energy from an eDOS array.

Light on purpose: the manifest is read as data, and ``model``/``train`` (torch) are imported
only when a hook asks for them.
"""
