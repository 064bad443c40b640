"""Medical image I/O: the only part of kdsam_core that touches files of pixels.

``load_volume`` reads DICOM (series folders, single/multi-frame files, ultrasound colour),
NIfTI, NRRD, MHA, PNG, JPEG, TIFF into a :class:`Volume`; ``window_to_uint8`` maps a slice
to the model's RGB uint8; ``save_mask`` writes NIfTI / NRRD / MHA / PNG / DICOM SEG.
"""

from .readers import list_dicom_series, load_volume, volume_from_sitk
from .volume import Volume
from .window import window_to_uint8
from .writers import MASK_SUFFIXES, mask_to_sitk, save_mask

__all__ = ["Volume", "load_volume", "list_dicom_series", "volume_from_sitk", "window_to_uint8", "save_mask",
           "mask_to_sitk", "MASK_SUFFIXES"]
