"""Data: the real IU X-Ray reports (`iu_xray`), the renderer (`render`), the embedded
SynthCXR-IU dataset built from them (`synthcxr`), and loaders for the papers' real
datasets in their published formats (`loaders`, `dicom`)."""
