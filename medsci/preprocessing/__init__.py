"""Preprocessing of raw inputs into model-ready arrays; the MRI stage is :mod:`medsci.preprocessing.mri`."""
