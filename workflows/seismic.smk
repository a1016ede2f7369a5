# Seismic interpolation rules are added with the seismic generator.


def seismic_outputs():
    return []
