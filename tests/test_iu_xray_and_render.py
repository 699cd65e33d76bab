import numpy as np
import pytest

from medlib.data.iu_xray import clean_report, parse_report_xml, parse_tag, read_reports
from medlib.data.render import render_study
from medlib.data.sources import IU_REPORTS, xrv_file
from medlib.data.synthcxr import rsna_boxes, split_of


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
    rb = rsna_boxes()
    normal = next(r for r in reports if r.is_normal)
    img1, drawn, _ = render_study(normal.tags, 64, 0, 1, rb)
    img2, _, _ = render_study(normal.tags, 64, 0, 1, rb)
    assert drawn == [] and np.array_equal(img1, img2)
    img3, _, _ = render_study(normal.tags, 64, 1, 1, rb)
    assert not np.array_equal(img1, img3)


def test_every_drawn_finding_has_a_box_inside_the_image(reports):
    rb = rsna_boxes()
    seen = 0
    for i, r in enumerate(reports[:300]):
        _, drawn, _ = render_study(r.tags, 96, 0, i, rb)
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
