"""The MRI preprocessing stage (:mod:`.stage`) and its MRI-specific steps (brain mask, N4, intensity window,
way back to the native grid); the generic geometry and ``.npz`` store are :mod:`medsci.preprocessing`."""
