"""Read a radiograph from DICOM as the papers' data need it (pydicom does the decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# Projection radiographs: computed and digital radiography. Chest X-ray data sets (RSNA, MIMIC-CXR)
# are CR or DX; a CT or MR slice is a cross-section with another intensity scale and never belongs here.
RADIOGRAPH_MODALITIES = ("CR", "DX")
# What a refused file is, in the refusal: only CT, MR and PET are cross-sectional slices.
MODALITY_KINDS = {
    "CT": "a cross-sectional CT slice", "MR": "a cross-sectional MR slice", "PT": "a cross-sectional PET slice",
    "US": "an ultrasound image", "NM": "a nuclear-medicine image", "OT": "an image of another, unspecified kind",
    "MG": "a mammogram", "XA": "an angiography frame", "RF": "a fluoroscopy frame", "SC": "a secondary capture",
    "SR": "a structured report, not an image", "DOC": "a document, not an image",
}


def read_dicom(path: str | Path, window: bool = True, modalities: tuple[str, ...] = RADIOGRAPH_MODALITIES) -> np.ndarray:
    """A DICOM radiograph as (H, W) uint8, bright = dense: rescale slope / intercept applied, the
    DICOM window (if any) applied, MONOCHROME1 inverted, 12/16-bit data scaled to 0..255.

    What is read: single-frame greyscale images whose Modality is one of `modalities` (CR / DX), or
    that carry no Modality (secondary captures, exported files). Another modality (CT, MR, ...) is
    refused. A window narrower than one grey level (width < 1, which the DICOM standard does not
    allow) or not a finite number is ignored and the pixel range used instead, as with no window.
    Raises ValueError naming the file when it is not such an image."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: DICOM file not found")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable DICOM file ({err})") from err
    if "PixelData" not in ds:
        raise ValueError(f"{path}: DICOM file has no pixel data (is it an image?)")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality not in modalities:
        raise ValueError(f"{path}: Modality {modality} ({MODALITY_KINDS.get(modality, 'not a projection radiograph')}); "
                         f"medlib reads projection radiographs ({'/'.join(modalities)})")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{path}: PhotometricInterpretation {photometric}; a greyscale radiograph is MONOCHROME1/2")
    try:
        arr = ds.pixel_array.astype(np.float32)
    except Exception as err:  # missing codec, truncated pixel data
        raise ValueError(f"{path}: pixel data cannot be decoded ({type(err).__name__}: {err})") from err
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D frame, got pixel array of shape {arr.shape}")
    arr = arr * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    lo, hi = float(arr.min()), float(arr.max())
    if window and "WindowCenter" in ds and "WindowWidth" in ds:
        c = ds.WindowCenter[0] if getattr(ds.WindowCenter, "VM", 1) > 1 else ds.WindowCenter
        w = ds.WindowWidth[0] if getattr(ds.WindowWidth, "VM", 1) > 1 else ds.WindowWidth
        c, w = float(c), float(w)
        if np.isfinite(c) and np.isfinite(w) and w >= 1:
            lo, hi = c - w / 2, c + w / 2
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
    if photometric == "MONOCHROME1":  # bright = air in MONOCHROME1
        arr = 1.0 - arr
    return (arr * 255).round().astype(np.uint8)


def write_dicom(path: str | Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
                slope: float = 1.0, intercept: float = 0.0, modality: str = "CR") -> Path:
    """Write a greyscale radiograph as an uncompressed single-frame DICOM (secondary capture): data sets
    in RSNA's layout for checks, and test files of each photometric interpretation and bit depth."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)
