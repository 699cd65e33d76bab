"""WordNet for nltk's METEOR, offline: Debian's `wordnet-base` package ships the WordNet 3.0
database files that nltk's reader expects, except the small `lexnames` index, which is written
here from the list in the same package's lexnames(5WN) manual page."""

from __future__ import annotations

import gzip
import re
import shutil
from functools import cache
from pathlib import Path

from medlib.paths import cache_root

DEBIAN_DICT = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
INSTALL_HINT = "install Debian's WordNet database: apt-get install wordnet-base"
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def _lexnames_from_man(man: Path) -> str:
    rows = re.findall(r"^(\d\d)\t(\w+\.\w+)", gzip.decompress(man.read_bytes()).decode("utf-8", "replace"), flags=re.M)
    if len(rows) < 45:
        raise ValueError(f"{man}: expected 45 lexicographer files, found {len(rows)}")
    return "".join(f"{num}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for num, name in rows)


@cache
def wordnet():
    """An nltk WordNetCorpusReader over Debian's WordNet 3.0, or None when it is not installed."""
    if not (DEBIAN_DICT / "data.noun").exists() or not LEXNAMES_MAN.exists():
        return None
    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = cache_root() / "wordnet"
    root.mkdir(parents=True, exist_ok=True)
    for f in DEBIAN_DICT.iterdir():  # copied, not linked: nltk refuses files outside its root
        if f.is_file() and not (root / f.name).exists():
            shutil.copyfile(f, root / f.name)
    if not (root / "lexnames").exists():
        (root / "lexnames").write_text(_lexnames_from_man(LEXNAMES_MAN))
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk only reads corpora under its data path
    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the mapping to other WordNet versions (for multilingual data) is not needed

    return EnglishWordNet(str(root), None)
