"""The real-format loaders on small fixture files written in each format, and pydicom's own DICOMs."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medlib.data.dicom import read_dicom, write_dicom
from medlib.data.loaders import medical_diff_vqa, r2gen_annotation, rsna_pneumonia, vqa_json

PYDICOM_CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def test_monochrome1_is_inverted_and_12_bit_scaled(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 8, dtype=np.uint16), (8, 1))
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    assert np.array_equal(m1, 255 - m2)


def test_a_ct_slice_is_refused_on_the_radiograph_path_and_read_when_asked_for(tmp_path):
    with pytest.raises(ValueError, match=r"CT_small.dcm: Modality CT \(a cross-sectional CT slice\); medlib reads projection radiographs \(CR/DX\)"):
        read_dicom(PYDICOM_CT)
    img = read_dicom(PYDICOM_CT, modalities=("CT",))
    assert img.dtype == np.uint8 and img.shape == (128, 128) and img.max() > img.min()
    mr = write_dicom(tmp_path / "mr.dcm", np.zeros((8, 8), np.uint16), modality="MR")
    with pytest.raises(ValueError, match="mr.dcm: Modality MR"):
        read_dicom(mr)


@pytest.mark.parametrize("width", [0, 0.5, float("nan")])
def test_a_degenerate_window_is_ignored_not_binarised(tmp_path, width):
    ramp = np.tile(np.linspace(0, 4095, 16, dtype=np.uint16), (16, 1))
    plain = read_dicom(write_dicom(tmp_path / "plain.dcm", ramp))
    path = write_dicom(tmp_path / "w.dcm", ramp)
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 2048, width
    ds.save_as(path)
    img = read_dicom(path)
    assert np.array_equal(img, plain) and len(np.unique(img)) == 16


def test_corrupt_and_non_image_dicom_name_the_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(ValueError, match="broken.dcm: not a readable DICOM"):
        read_dicom(bad)
    with pytest.raises(FileNotFoundError, match="nope.dcm"):
        read_dicom(tmp_path / "nope.dcm")


def test_r2gen_annotation_cleans_truncates_and_names_bad_entries(tmp_path):
    (tmp_path / "CXR1").mkdir()
    for n in ("0.png", "1.png"):
        (tmp_path / "CXR1" / n).write_bytes(b"png")
    ann = {"train": [{"id": "CXR1", "report": "The heart is normal. " * 40, "image_path": ["CXR1/0.png", "CXR1/1.png"]}],
           "val": [], "test": [{"id": "CXR2", "image_path": ["CXR1/0.png"]}]}
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(ann))
    ds = r2gen_annotation(path, tmp_path, "train")
    assert len(ds) == 1 and len(ds[0].report.split()) == 60 and ds[0].report.startswith("the heart is normal .")
    with pytest.raises(ValueError, match=r"annotation.json: test entry 0 has no 'report'"):
        r2gen_annotation(path, tmp_path, "test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        r2gen_annotation(path, tmp_path, "dev")


def test_missing_image_is_an_error_or_a_counted_skip(tmp_path):
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps({"train": [{"id": "a", "report": "x.", "image_path": ["missing.png"]}], "val": [], "test": []}))
    with pytest.raises(FileNotFoundError, match="missing.png not found"):
        r2gen_annotation(path, tmp_path, "train")
    ds = r2gen_annotation(path, tmp_path, "train", skip_missing_images=True)
    assert len(ds) == 0 and len(ds.skipped) == 1


def test_medical_diff_vqa_csv(tmp_path):
    img = tmp_path / "files" / "p10" / "p10000032" / "s50414267" / "abc.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"jpg")
    csv = tmp_path / "mimic_pair_questions.csv"
    csv.write_text("study_id,subject_id,question_type,question,answer,dicom_id\n"
                   "50414267,10000032,presence,is there pneumothorax?,no,abc\n"
                   "50414268,10000032,view,which view?,PA,zzz\n")
    ds = medical_diff_vqa(csv, tmp_path)
    assert len(ds) == 1 and ds[0].answer == "no" and len(ds.skipped) == 1
    (tmp_path / "bad.csv").write_text("study_id,question,answer\n1,q,a\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['subject_id', 'question_type', 'dicom_id'\]"):
        medical_diff_vqa(tmp_path / "bad.csv", tmp_path)


def test_rsna_label_csv_groups_boxes_and_refuses_boxes_outside_the_image(tmp_path):
    for pid in ("p1", "p2"):
        write_dicom(tmp_path / f"{pid}.dcm", np.zeros((8, 8)))
    csv = tmp_path / "stage_2_train_labels.csv"
    csv.write_text("patientId,x,y,width,height,Target\np1,,,,,0\np2,264,152,213,379,1\np2,562,152,256,453,1\n")
    ds = rsna_pneumonia(csv, tmp_path)
    by_id = {s.id: s for s in ds}
    assert by_id["p1"].boxes == [] and by_id["p2"].boxes == [[264, 152, 477, 531], [562, 152, 818, 605]]
    csv.write_text("patientId,x,y,width,height,Target\np2,900,152,213,379,1\n")
    with pytest.raises(ValueError, match="line 2: box .* outside the 1024 px image"):
        rsna_pneumonia(csv, tmp_path)


def test_slake_keeps_english_rows(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    path = tmp_path / "test.json"
    path.write_text(json.dumps([{"img_name": "a.jpg", "question": "Is it normal?", "answer": "Yes", "q_lang": "en"},
                                {"img_name": "a.jpg", "question": "正常吗", "answer": "是", "q_lang": "zh"}]))
    assert len(vqa_json(path, tmp_path, "slake")) == 1


def test_openi_xml_and_png_layout(tmp_path):
    from medlib.data.iu_xray import read_reports
    from medlib.data.loaders import openi_xml
    from medlib.data.sources import IU_REPORTS, xrv_file

    first = read_reports(xrv_file(IU_REPORTS))[0]  # CXR1, two images
    (tmp_path / f"{first.image_ids[0]}.png").write_bytes(b"png")
    ds = openi_xml(xrv_file(IU_REPORTS), tmp_path)
    assert len(ds) == 1 and ds[0].id == "CXR1" and ds[0].report.startswith("the cardiac silhouette")
    assert len(ds.skipped) > 3900  # every other study's images are absent here, each counted


def test_mimic_cxr_jpg_folder_layout(tmp_path):
    from medlib.data.loaders import mimic_cxr_jpg

    study = tmp_path / "jpg" / "files" / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    (study / "02aa804e.jpg").write_bytes(b"jpg")
    rep = tmp_path / "reports" / "files" / "p10" / "p10000032"
    rep.mkdir(parents=True)
    (rep / "s50414267.txt").write_text("FINDINGS: No focal consolidation. IMPRESSION: No acute process.")
    split = tmp_path / "split.csv"
    split.write_text("dicom_id,study_id,subject_id,split\n02aa804e,50414267,10000032,train\n")
    ds = mimic_cxr_jpg(tmp_path / "jpg", tmp_path / "reports", split, "train")
    assert len(ds) == 1 and "no focal consolidation" in ds[0].report
    assert len(mimic_cxr_jpg(tmp_path / "jpg", None, split, "test")) == 0
    with pytest.raises(FileNotFoundError, match="no 'files/' folder"):
        mimic_cxr_jpg(tmp_path)


def test_csv_encodings_a_spreadsheet_may_save(tmp_path):
    """UTF-8 with a byte-order mark ("CSV UTF-8") reads as UTF-8; UTF-16 and latin-1 name the file and encoding."""
    img = tmp_path / "files" / "p10" / "p10000032" / "s50414267" / "abc.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"jpg")
    text = ("study_id,subject_id,question_type,question,answer,dicom_id\n"
            "50414267,10000032,presence,is there an opacité?,no,abc\n")
    (tmp_path / "bom.csv").write_bytes(text.encode("utf-8-sig"))
    ds = medical_diff_vqa(tmp_path / "bom.csv", tmp_path)
    assert len(ds) == 1 and ds[0].question == "is there an opacité?"
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16.csv: the file is UTF-16 \(LE\); save it as UTF-8"):
        medical_diff_vqa(tmp_path / "utf16.csv", tmp_path)
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.csv: not UTF-8 \(byte 0xe9"):
        medical_diff_vqa(tmp_path / "latin1.csv", tmp_path)
    rsna = "patientId,x,y,width,height,Target\np1,10,10,100,100,1\n"
    (tmp_path / "rsna_bom.csv").write_bytes(rsna.encode("utf-8-sig"))
    skipped = rsna_pneumonia(tmp_path / "rsna_bom.csv", tmp_path, skip_missing_images=True).skipped
    assert len(skipped) == 1 and "patient p1" in skipped[0]  # the header's first column read as patientId
