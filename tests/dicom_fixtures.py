"""DICOM files written on the fly for the tests (pydicom), shared by the I/O, app, training and mask tests."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(
    path,
    arr,
    photometric="MONOCHROME2",
    *,
    signed=False,
    bits_stored=None,
    frames=None,
    transfer_syntax=ExplicitVRLittleEndian,
    pixel_data=None,
    **elements,
):
    """A minimal Secondary Capture DICOM file with ``arr`` ([rows, cols], [rows, cols, 3] or [frames, ...])."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    arr = np.asarray(arr)
    colour = photometric in ("RGB", "YBR_FULL")
    shape = arr.shape[1:] if frames else arr.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if frames:
        ds.NumberOfFrames = frames
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixel_data if pixel_data is not None else arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
