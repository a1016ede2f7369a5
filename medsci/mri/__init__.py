"""Brain MRI: BraTS-style case folders (:mod:`.cases`), which MRI contrast a DICOM series holds (:mod:`.contrasts`)
and the MRI preprocessing stage (:mod:`.preprocessing`). Builds on the generic :mod:`medsci.io` and
:mod:`medsci.preprocessing`, which never import it."""
