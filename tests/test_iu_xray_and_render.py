import numpy as np
import pytest

from medlib.data.iu_xray import clean_report, parse_report_xml, parse_tag, read_reports
from medlib.data.render import render_study
from medlib.data.sources import IU_REPORTS, xrv_file
from medlib.data.synthcxr import lung_outlines, lung_shapes, rsna_boxes, split_of


@pytest.fixture(scope="module")
def reports():
    return read_reports(xrv_file(IU_REPORTS))


def test_all_3955_real_reports_are_parsed(reports):
    assert len(reports) == 3955
    assert reports[0].uid == "CXR1" and reports[0].image_ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert sum(not r.has_findings for r in reports) > 0  # kept and flagged


def test_mesh_tag_is_split_into_finding_location_severity():
    t = parse_tag("Opacity/lung/base/left/mild/streaky")
    assert (t.finding, t.location, t.severity, t.attributes) == ("Opacity", ("lung", "base", "left"), "mild", ("streaky",))


def test_r2gen_cleaning():
    assert clean_report("The heart is normal. No XXXX effusion.") == "the heart is normal . no effusion ."


def test_broken_xml_names_the_file():
    with pytest.raises(ValueError, match="bad.xml: not valid XML"):
        parse_report_xml(b"<eCitation><uId", "bad.xml")


def test_rendering_is_deterministic_and_normal_studies_show_nothing(reports):
    rb, lungs = rsna_boxes(), lung_shapes()
    normal = next(r for r in reports if r.is_normal)
    img1, drawn, _ = render_study(normal.tags, 64, 0, 1, rb, lungs)
    img2, _, _ = render_study(normal.tags, 64, 0, 1, rb, lungs)
    assert drawn == [] and np.array_equal(img1, img2)
    img3, _, _ = render_study(normal.tags, 64, 1, 1, rb, lungs)
    assert not np.array_equal(img1, img3)


def test_every_drawn_finding_has_a_box_inside_the_image(reports):
    rb, lungs = rsna_boxes(), lung_shapes()
    seen = 0
    for i, r in enumerate(reports[:300]):
        _, drawn, _ = render_study(r.tags, 96, 0, i, rb, lungs)
        for d in drawn:
            assert d.boxes
            for x1, y1, x2, y2 in d.boxes:
                assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            seen += 1
    assert seen > 50


def test_splits_are_by_study_and_stable():
    assert split_of("CXR1") == split_of("CXR1")
    shares = [split_of(f"CXR{i}") for i in range(4000)]
    assert 0.25 < shares.count("pretrain") / 4000 < 0.35


def test_real_lung_masks_become_right_and_left_outlines():
    shapes = lung_shapes()
    assert shapes.ndim == 4 and shapes.shape[1] == 2 and len(shapes) >= 400  # 435 of the 517 shipped masks
    assert 0 < lung_outlines()[1] < 517 - 400
    # Lung-shaped, from the real masks: a narrow apex above a full middle, and no two alike.
    rows = shapes.shape[2]
    apex, middle = shapes[:, :, : rows // 8].mean(), shapes[:, :, rows // 3: 2 * rows // 3].mean()
    assert apex < 0.6 * middle and middle > 0.8
    assert np.abs(shapes[0] - shapes[1]).mean() > 0.02

def test_nodules_are_visible_at_the_tiny_size(reports):
    """A calcified granuloma of 2-3 pixels is still brighter than the lung around it."""
    rb, lungs = rsna_boxes(), lung_shapes()
    contrasts = []
    for i, r in enumerate(reports):
        if not any(t.finding.lower() == "calcified granuloma" for t in r.tags):
            continue
        img, drawn, _ = render_study(r.tags, 128, 0, i, rb, lungs)
        for d in drawn:
            if d.label == "calcified granuloma":
                x1, y1, x2, y2 = (int(round(v)) for v in d.boxes[0])
                inside = img[y1:y2, x1:x2].astype(float).max()
                ring = img[max(0, y1 - 4):y2 + 4, max(0, x1 - 4):x2 + 4].astype(float)
                contrasts.append(inside - np.median(ring))
        if len(contrasts) >= 20:
            break
    assert len(contrasts) >= 20 and np.median(contrasts) > 40


def test_a_broken_lung_mask_archive_names_the_file_and_entry(tmp_path, monkeypatch):
    import zipfile

    from medlib.data import synthcxr

    bad = tmp_path / "masks.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("masks/readme.png", b"not a png")
    monkeypatch.setattr(synthcxr, "xrv_file", lambda name: bad)
    with pytest.raises(ValueError, match=r"masks.zip: entry 'masks/readme.png' is not a readable image"):
        synthcxr.lung_outlines.__wrapped__()


def test_anatomy_boxes_leave_the_image_and_findings_as_they_are_and_sit_where_the_organs_are(reports):
    """What the general grounding stage learns from: a box per normal structure, drawn from the same shapes, with no
    random number drawn (the image and the findings' boxes are those of `render_study`)."""
    from medlib.data.anatomy import ANATOMY
    from medlib.data.render import render_with_anatomy

    rb, lungs = rsna_boxes(), lung_shapes()
    for i, r in enumerate(reports[:40]):
        img, drawn, _ = render_study(r.tags, 96, 0, i, rb, lungs, view="AP" if i % 3 == 0 else "PA")
        img2, drawn2, _, anatomy = render_with_anatomy(r.tags, 96, 0, i, rb, lungs, view="AP" if i % 3 == 0 else "PA")
        assert np.array_equal(img, img2) and [d.boxes for d in drawn] == [d.boxes for d in drawn2]
        boxes = {a.label: a.boxes[0] for a in anatomy}
        assert set(boxes) == set(ANATOMY) and all(a.kind == "anatomy" for a in anatomy)
        assert all(0 <= v <= 96 for b in boxes.values() for v in b)
        centre = {k: ((b[0] + b[2]) / 2 / 96, (b[1] + b[3]) / 2 / 96) for k, b in boxes.items()}
        # the patient's right on the image's left; clavicles above the lungs' middle, hemidiaphragms below it
        assert centre["right lung"][0] < 0.45 < 0.55 < centre["left lung"][0]
        assert centre["right clavicle"][1] < centre["right lung"][1] < centre["right hemidiaphragm"][1]
        assert abs(centre["spine"][0] - 0.5) < 0.05 and 0.4 < centre["heart"][0] < 0.7
