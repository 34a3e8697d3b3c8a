"""Regenerate enwiki_sample.txt: clean English Wikipedia prose for perplexity checks.

The source is the Wikipedia dump excerpt that gensim 4.4.0 ships as test data
(gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2,
206 pages of April 2016 English Wikipedia). Only that file is read from the wheel; gensim is
never installed. The wiki markup is reduced to plain prose paragraphs: templates, references,
tables, comments, File:/Image:/Category: and interlanguage links, math and other non-prose tags,
headings, lists and the reference-style sections are dropped; link and bold/italic text is kept.

    python sentinel_matrix/data/make_wikipedia_text.py            # downloads the wheel with pip (27 MB)
    python sentinel_matrix/data/make_wikipedia_text.py --wheel gensim-4.4.0-....whl

Stdlib only. Text: CC BY-SA 3.0, Wikipedia contributors (see README.md here).
"""

from __future__ import annotations

import argparse
import bz2
import html
import io
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

GENSIM = "gensim==4.4.0"
MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
OUT = Path(__file__).resolve().parent / "enwiki_sample.txt"
WORDS = 30_000
MIN_PARAGRAPH_WORDS = 12

# Sections that hold lists of sources and links, not prose: everything from here to the next
# heading of the same or a higher level is dropped.
SKIP_SECTIONS = {
    "see also", "references", "external links", "further reading", "notes", "bibliography", "sources",
    "footnotes", "citations", "notes and references", "references and notes", "works", "gallery",
    "discography", "filmography", "selected works", "publications", "primary sources", "secondary sources",
}
# Tags whose content is not prose.
DROP_TAGS = ("ref", "math", "gallery", "timeline", "score", "syntaxhighlight", "source", "pre", "code",
             "imagemap", "chem", "hiero", "poem", "blockquote", "table", "references", "nowiki", "ce", "graph")
NON_PROSE_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?)\s*:",
                            re.IGNORECASE)
KEEP_NAMESPACE_LINK = re.compile(r"^\s*:?\s*(wikipedia|wp|help|portal|w|s|q|b|n|v)\s*:", re.IGNORECASE)


def fetch_member(wheel: Path | None) -> bytes:
    """The bz2 member out of the gensim wheel, downloaded with pip into a temp dir when not given."""
    if wheel is not None:
        return zipfile.ZipFile(wheel).read(MEMBER)
    with tempfile.TemporaryDirectory() as tmp:
        # One fixed wheel (any gensim 4.4.0 wheel holds the same test data); never an sdist build.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", GENSIM,
                        "-d", tmp, "-q"], check=True)
        wheels = sorted(Path(tmp).glob("gensim-*.whl"))
        if not wheels:
            raise SystemExit(f"pip download {GENSIM} produced no wheel in {tmp}")
        return zipfile.ZipFile(wheels[0]).read(MEMBER)


def articles(xml_bytes: bytes):
    """(title, wikitext) of every main-namespace page that is not a redirect, in dump order."""
    for _, elem in ET.iterparse(io.BytesIO(xml_bytes), events=("end",)):
        if elem.tag.rsplit("}", 1)[-1] == "page":
            ns = elem.tag[: -len("page")]  # "{http://www.mediawiki.org/xml/export-0.10/}"
            title = elem.findtext(f"{ns}title") or ""
            namespace = elem.findtext(f"{ns}ns") or "0"
            redirect = elem.find(f"{ns}redirect") is not None
            text = elem.findtext(f"{ns}revision/{ns}text") or ""
            if namespace == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                yield title, text
            elem.clear()


def remove_nested(text: str, open_tok: str, close_tok: str, keep=None) -> str:
    """Remove balanced open_tok ... close_tok spans (nesting aware); keep(inner) may return a replacement."""
    out, i, last = [], 0, 0
    stack: list[int] = []
    n = len(text)
    while i < n:
        if text.startswith(open_tok, i):
            if not stack:
                out.append(text[last:i])
            stack.append(i)
            i += len(open_tok)
        elif stack and text.startswith(close_tok, i):
            begin = stack.pop()
            i += len(close_tok)
            if not stack:
                inner = text[begin + len(open_tok): i - len(close_tok)]
                out.append(keep(inner) if keep else "")
                last = i
        else:
            i += 1
    if stack:  # unbalanced: drop the rest from the outermost opener
        return "".join(out)
    out.append(text[last:])
    return "".join(out)


def _link(inner: str) -> str:
    """[[target|label]] -> label; [[target]] -> target; files, categories, interlanguage -> ''."""
    if KEEP_NAMESPACE_LINK.match(inner):
        inner = inner.split(":", 1)[1] if "|" not in inner else inner
    elif NON_PROSE_LINK.match(inner):
        return ""
    if "[[" in inner:  # a caption holding links, only inside dropped File: links
        return ""
    label = inner.split("|")[-1] if "|" in inner else inner
    label = label.split("#", 1)[0] if "|" not in inner and "#" in label and not label.startswith("#") else label
    return label.strip()


def _split_args(inner: str) -> list[str]:
    """Template arguments split on "|" outside [[links]]."""
    args, depth, cur = [], 0, []
    i = 0
    while i < len(inner):
        if inner.startswith("[[", i):
            depth += 1
            cur.append("[[")
            i += 2
        elif inner.startswith("]]", i) and depth:
            depth -= 1
            cur.append("]]")
            i += 2
        elif inner[i] == "|" and not depth:
            args.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(inner[i])
            i += 1
    args.append("".join(cur))
    return [a.strip() for a in args]


UNITS = {"C": "°C", "F": "°F", "km2": "km²", "m2": "m²", "sqmi": "square miles", "e6acre": "million acres",
         "acre": "acres", "oilbbl": "barrels of oil", "koilbbl/d": "thousand barrels per day",
         "Moilbbl/d": "million barrels per day", "Moilbbl": "million barrels", "e6m3": "million m³",
         "e9m3": "billion m³", "km/h": "km/h", "mph": "mph"}


def _convert(a: list[str]) -> str:
    """{{convert|12|km|mi}} -> "12 km"; {{convert|1|to|3|m}} -> "1 to 3 m"."""
    if len(a) > 3 and a[1] in ("-", "–", "to", "and", "by", "x", "or"):
        value, unit = f"{a[0]} {'to' if a[1] in ('-', '–') else a[1]} {a[2]}", a[3]
    elif len(a) > 1:
        value, unit = a[0], a[1]
    else:
        return ""
    return f"{value} {UNITS.get(unit, unit)}".replace(" °", "°") if unit not in ("", "-") else value


# Templates that render inline prose: name -> how to render it from its positional arguments.
INLINE_TEMPLATES = {
    "lang": lambda a: a[1] if len(a) > 1 else "",
    "nowrap": lambda a: a[0] if a else "",
    "small": lambda a: a[0] if a else "",
    "sc": lambda a: a[0] if a else "",
    "smallcaps": lambda a: a[0] if a else "",
    "vr": lambda a: a[0] if a else "",
    "nobr": lambda a: a[0] if a else "",
    "as of": lambda a: f"As of {' '.join(a[:3])}" if a else "",
    "ipa": lambda a: a[0] if a else "",
    "ipablink": lambda a: a[0] if a else "",
    "angbr": lambda a: f"⟨{a[0]}⟩" if a else "",
    "convert": _convert,
    "cvt": _convert,
}


def _template(inner: str) -> str:
    """Inline templates become their text; every other template (citations, boxes, notes) goes."""
    inner = remove_nested(inner, "{{", "}}", keep=_template)
    args = [a for a in _split_args(inner) if "=" not in a.split("[[")[0]]  # positional arguments only
    if not args:
        return ""
    name = args[0].lower().replace("_", " ").strip()
    if name.startswith("lang-") or name.startswith("transl"):
        return args[-1] if len(args) > 1 else ""
    render = INLINE_TEMPLATES.get(name)
    return render(args[1:]) if render else ""


def clean_markup(text: str) -> str:
    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    for tag in DROP_TAGS:
        text = re.sub(rf"<{tag}\b[^>]*/>", "", text, flags=re.IGNORECASE)
        text = re.sub(rf"<{tag}\b[^>]*>.*?</{tag}\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
    text = remove_nested(text, "{{", "}}", keep=_template)
    text = remove_nested(text, "{|", "|}")
    text = remove_nested(text, "[[", "]]", keep=_link)
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"\[(?:https?:)?//[^\]]*\]", "", text)  # bare [url]
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)  # remaining tags: keep their content
    text = re.sub(r"'{2,}", "", text)  # bold / italic
    text = re.sub(r"__[A-Z]+__", "", text)  # __NOTOC__ and friends
    return text


def tidy(paragraph: str) -> str:
    p = re.sub(r"\s+", " ", paragraph).strip()
    p = re.sub(r"\(\s*[,;:]?\s*\)", "", p)  # "()" or "(, )" left by removed templates
    p = re.sub(r"\(\s*[,;]\s*", "(", p)
    p = re.sub(r"\s*[,;]\s*\)", ")", p)
    p = re.sub(r"\s+([,.;:!?)])", r"\1", p)
    p = re.sub(r"([(])\s+", r"\1", p)
    p = re.sub(r"([,;])\1+", r"\1", p)
    p = re.sub(r"\s{2,}", " ", p)
    return p.strip()


def looks_like_prose(p: str) -> bool:
    words = p.split()
    if len(words) < MIN_PARAGRAPH_WORDS or p[-1] not in ".!?\"'”)":
        return False
    if any(mark in p for mark in ("{{", "}}", "[[", "]]", "{|", "|}", "|", "=", "<", ">")):
        return False
    letters = sum(ch.isalpha() for ch in p)
    starts_well = p[0].isupper() or p[0].isdigit() or p[0] in "\"'“("
    return starts_well and letters / len(p) > 0.7


def paragraphs(wikitext: str):
    """Prose paragraphs of one article: no headings, lists, indented lines or reference sections."""
    skipping_level = None
    block: list[str] = []
    for line in clean_markup(wikitext).splitlines() + [""]:
        stripped = line.strip()
        heading = re.fullmatch(r"(={2,6})\s*(.*?)\s*\1", stripped)
        if heading or not stripped or stripped[0] in "*#:;|!":
            if block:
                if skipping_level is None:
                    yield tidy(" ".join(block))
                block = []
            if heading:
                level = len(heading.group(1))
                if skipping_level is not None and level <= skipping_level:
                    skipping_level = None
                if heading.group(2).strip().lower() in SKIP_SECTIONS:
                    skipping_level = level
            continue
        block.append(stripped)


def build(xml_bytes: bytes, words: int = WORDS) -> str:
    kept, count = [], 0
    for _title, wikitext in articles(xml_bytes):
        for p in paragraphs(wikitext):
            if looks_like_prose(p):
                kept.append(p)
                count += len(p.split())
                if count >= words:
                    return "\n\n".join(kept) + "\n"
    return "\n\n".join(kept) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="a gensim 4.4.0 wheel already on disk (skips pip download)")
    parser.add_argument("--words", type=int, default=WORDS, help=f"stop after this many words (default {WORDS})")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    xml_bytes = bz2.decompress(fetch_member(args.wheel))
    text = build(xml_bytes, args.words)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text.split())} words, {text.count(chr(10) * 2) + 1} paragraphs")


if __name__ == "__main__":
    main()
