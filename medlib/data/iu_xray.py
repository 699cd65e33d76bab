"""The real IU X-Ray (Open-i) reports: sections, human MeSH "major" tags, image ids.

Each MeSH major tag reads `Finding/part/part`, e.g. `Opacity/lung/base/left/streaky` or
`Cardiomegaly/mild`; the parts after the finding are sorted here into anatomical location
and severity words, and what is neither is kept as an attribute (`streaky`, `calcified`).
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

SEVERITY_WORDS = {"mild", "moderate", "severe", "small", "large", "borderline", "minimal", "tiny", "extensive", "huge"}
LOCATION_WORDS = {
    "lung", "lungs", "base", "bases", "left", "right", "bilateral", "upper lobe", "lower lobe", "middle lobe",
    "lingula", "apex", "hilum", "hilar", "retrocardiac", "lateral", "anterior", "posterior", "diffuse", "focal",
    "multiple", "upper", "lower", "costophrenic angle", "mediastinum", "thorax", "chest", "heart", "pleura",
    "perihilar", "apices", "cardiophrenic angle", "paratracheal", "mid", "azygos lobe", "lobe", "interstitial",
}


@dataclass(frozen=True)
class Tag:
    finding: str                 # "Opacity"
    location: tuple[str, ...]    # ("lung", "base", "left")
    severity: str | None         # "mild"
    attributes: tuple[str, ...]  # ("streaky",)
    raw: str                     # the tag as written


@dataclass
class Report:
    uid: str                     # "CXR3029"
    comparison: str
    indication: str
    findings: str
    impression: str
    tags: list[Tag] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        return bool(self.findings.strip())

    @property
    def is_normal(self) -> bool:
        return all(t.finding.lower() == "normal" for t in self.tags)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["has_findings"] = self.has_findings
        return d


def parse_tag(raw: str) -> Tag:
    parts = [p.strip() for p in raw.strip().split("/") if p.strip()]
    if not parts:
        raise ValueError(f"empty MeSH tag {raw!r}")
    finding, rest = parts[0], [p.lower() for p in parts[1:]]
    location = tuple(p for p in rest if p in LOCATION_WORDS)
    severity = next((p for p in rest if p in SEVERITY_WORDS), None)
    attributes = tuple(p for p in rest if p not in LOCATION_WORDS and p not in SEVERITY_WORDS)
    return Tag(finding, location, severity, attributes, raw.strip())


def _text(el) -> str:
    return re.sub(r"\s+", " ", "".join(el.itertext())).strip() if el is not None else ""


def parse_report_xml(data: bytes, origin: str) -> Report:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise ValueError(f"{origin}: not valid XML ({err})") from err
    uid_el = root.find("uId")
    if uid_el is None or not uid_el.get("id"):
        raise ValueError(f"{origin}: no <uId id=...> element")
    sections = {el.get("Label", "").upper(): _text(el) for el in root.iter("AbstractText")}
    tags = [parse_tag(el.text) for el in root.iter("major") if el.text and el.text.strip()]
    images = [el.get("id") for el in root.iter("parentImage") if el.get("id")]
    return Report(uid_el.get("id"), sections.get("COMPARISON", ""), sections.get("INDICATION", ""),
                  sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""), tags, images)


def read_reports(path: str | Path) -> list[Report]:
    """All reports of an Open-i XML archive (`.tgz`) or folder of `.xml` files, sorted by id."""
    path = Path(path)
    reports = []
    if path.is_dir():
        for xml in sorted(path.glob("*.xml")):
            reports.append(parse_report_xml(xml.read_bytes(), str(xml)))
    else:
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".xml"):
                        reports.append(parse_report_xml(tar.extractfile(member).read(), f"{path}:{member.name}"))
        except tarfile.TarError as err:
            raise ValueError(f"{path}: not a readable tar archive ({err})") from err
    if not reports:
        raise ValueError(f"{path}: no report XML files found")
    return sorted(reports, key=lambda r: int(re.sub(r"\D", "", r.uid) or 0))


def clean_report(text: str) -> str:
    """R2Gen's report cleaning (IU X-Ray variant): lower case, de-identification marks and
    punctuation removed, sentences joined by " . " and ending in " ."."""
    if not isinstance(text, str):
        raise TypeError(f"clean_report expects a string, got {type(text).__name__}")

    def sent_clean(t: str) -> str:
        t = re.sub(r"[.,?;*!%^&_+():\-\[\]{}]", "", t.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower())
        return re.sub(r"\s+", " ", t).strip()

    text = (text.replace("..", ".").replace("..", ".").replace("1. ", "").replace(". 2. ", ". ").replace(". 3. ", ". ")
            .replace(". 4. ", ". ").replace(". 5. ", ". ").replace(" 2. ", ". ").replace(" 3. ", ". ")
            .replace(" 4. ", ". ").replace(" 5. ", ". ").replace("xxxx", "").replace("XXXX", "").strip().lower().split(". "))
    sents = [s for s in (sent_clean(t) for t in text) if s]
    return (" . ".join(sents) + " .") if sents else ""


def truncate_tokens(text: str, max_tokens: int) -> str:
    return " ".join(text.split()[:max_tokens])
