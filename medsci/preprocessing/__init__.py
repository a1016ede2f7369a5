"""Generic preprocessing of volumes: voxel-grid geometry (:mod:`.geometry`) and the ``.npz`` + sidecar store
(:mod:`.store`); the MRI stage built on them is :mod:`medsci.mri.preprocessing.stage`."""
