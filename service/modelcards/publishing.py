"""A model version and a dataset version as citable products of the archive: their identifiers, citations (a model's
names its dataset's image authors in aggregate and links the full attribution), and a model's card as a Hugging
Face-style README.md with YAML front matter, downloadable beside the weights."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from sqlmodel import Session, select

from service.archive.catalog import dataset_ref, license_family, model_ref
from service.archive.citations import Citation, Cited, cite
from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.datasets.service import by_digest
from service.modelcards import results, service
from service.models import DatasetVersion, ModelVersion, ProposalMember, Run, User

COMMONS = "Wikimedia Commons"


def attribution_entries(store: ArchiveStore, version: ModelVersion) -> list[dict[str, Any]]:
    try:
        return list(json.loads(read_object(store, version.attribution_sha256)).get("images", []))
    except (OSError, ValueError):
        return []


def attribution_url(version: ModelVersion) -> str:
    return f"/api/models/{version.name}/{version.version}/attribution.json"


def card_url(version: ModelVersion) -> str:
    return f"/models/{version.name}/{version.version}"


def readme_url(version: ModelVersion) -> str:
    return f"/api/models/{version.name}/{version.version}/README.md"


def _team(session: Session, version: ModelVersion) -> list[str]:
    run = session.get(Run, version.run_id)
    if run is None:
        return []
    return list(session.exec(select(User.name).join(ProposalMember).where(
        ProposalMember.proposal_id == run.proposal_id).order_by(User.id)).all())


def _origin(session: Session, version: ModelVersion) -> str:
    dataset = by_digest(session, version.dataset_digest)
    return dataset.origin if dataset else "unknown"


def model_citation(session: Session, store: ArchiveStore, version: ModelVersion, base_url: str = "") -> Citation:
    """The weights cited: the team whose run trained them, the facility, the identifier; the images' authors
    named in aggregate, with a link to the attribution that credits each one."""
    base = base_url.rstrip("/")
    authors = {str(e.get("author")) for e in attribution_entries(store, version) if e.get("author")}
    ref = f"{version.name}@{version.version}"
    origin = _origin(session, version)
    note = (f"Trained on {version.dataset}: {version.images} images by {len(authors)} authors"
            f"{' on ' + origin if origin != 'unknown' else ''}, each credited with its license in "
            f"{base}{attribution_url(version)}")
    return cite(Cited(authors=_team(session, version) or ["Commons Observatory"], title=f"{ref}: a diffusion model"
                      if not service.is_descriptor(version) else f"{ref}: a copy descriptor",
                      identifier=model_ref(version.name, version.version), doi=version.doi,
                      landing_url=f"{base}{card_url(version)}", released=version.created_at, kind="software",
                      note=note))


def dataset_citation(version: DatasetVersion, base_url: str = "") -> Citation:
    """A dataset version cited: its images' authors in aggregate (each credited in its attribution file)."""
    base = base_url.rstrip("/")
    ref = f"{version.name}@{version.version}"
    who = f"{len(version.authors)} {version.origin} contributors" if version.authors else version.origin
    credited = (f"Each image's author and license are listed in {base}/api/datasets/{ref}/files/attribution.txt"
                if "attribution.txt" in version.files else "")
    return cite(Cited(authors=[who], title=f"{ref}: {version.images} images from {version.origin}",
                      identifier=dataset_ref(version.name, version.version), doi=version.doi,
                      landing_url=f"{base}/datasets/{ref}", released=version.created_at, note=credited))


HF_LICENSES = {"public-domain": "cc0-1.0", "cc0": "cc0-1.0", "cc-by": "cc-by-4.0", "cc-by-sa": "cc-by-sa-4.0"}


def readme(session: Session, store: ArchiveStore, version: ModelVersion, base_url: str = "",
           citation: Citation | None = None) -> str:
    """The card as a Hugging Face-style README.md: YAML front matter (license, datasets, model-index results of
    the analyses public now), then the card in Markdown. The same for everyone: only public results are in it."""
    base = base_url.rstrip("/")
    ref = f"{version.name}@{version.version}"
    found = results.findings(session, store, version, None)
    family = license_family(version.licenses)
    metrics = [m for f in found.shown for m in f.metrics]
    front: dict[str, Any] = {
        "license": "other", "license_name": f"training data: {family or 'unknown'}",
        "license_link": f"{base}{card_url(version)}",
        "datasets": [dataset_ref(*version.dataset.split("@", 1)) if "@" in version.dataset else version.dataset],
        "library_name": "diffusers" if not service.is_descriptor(version) else "pytorch",
        "tags": ["diffusion", "commons-observatory", *(["wikimedia-commons"] if _origin(session, version) == COMMONS
                                                       else [])],
    }
    if metrics:
        front["model-index"] = [{"name": ref, "results": [{
            "task": {"type": "unconditional-image-generation", "name": "Image generation"},
            "dataset": {"name": version.dataset, "type": front["datasets"][0]},
            "metrics": metrics,
            "source": {"name": "Commons Observatory analyses", "url": f"{base}{card_url(version)}"}}]}]
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {ref}", "", f"Identifier `{model_ref(version.name, version.version)}`"
             + (f", DOI [{version.doi}](https://doi.org/{version.doi})" if version.doi else "")
             + f". Card: {base}{card_url(version)}", ""]
    if version.notes:
        lines += [version.notes, ""]
    if version.withdrawn_at:
        lines += [f"**Withdrawn** on {version.withdrawn_at.date()}: {version.withdrawn_reason}.", ""]
    lines += ["## Training data", "",
              f"- Dataset `{version.dataset}` ({version.images} images; digest `{version.dataset_digest}`), from "
              f"{_origin(session, version)}",
              "- Licenses: " + "; ".join(f"{name}: {count}" for name, count in sorted(version.licenses.items())),
              f"- Attribution of every image: {base}{attribution_url(version)}", "",
              "## Terms that follow from the data", ""]
    lines += [f"- {term}" for term in service.terms(version)]
    lines += ["", "## What the analyses found", ""]
    if found.shown:
        for finding in found.shown:
            report = f" ([report]({base}{finding.report_url}))" if finding.report_url else ""
            lines.append(f"- **{finding.kind}**, `obs:run/{finding.run_id}`{report}: "
                         + "; ".join(f"{what}: {value}" for what, value in finding.figures))
    else:
        lines.append("No analysis of this version is public yet.")
    if found.exclusive:
        lines.append(f"{found.exclusive} more still in their exclusive period.")
    lines += ["", "## Training", "", f"- Steps: {version.steps}", f"- Compute: {version.gpu_seconds} GPU-seconds",
              f"- Checkpoint sha256: `{version.checkpoint_sha256}`", "", "## Citation", "", "```bibtex",
              (citation or model_citation(session, store, version, base_url)).bibtex.strip(), "```", ""]
    return "\n".join(lines)


def readme_file(session: Session, store: ArchiveStore, version: ModelVersion, base_url: str = "",
                citation: Citation | None = None) -> tuple[bytes, str]:
    """The README's bytes and their sha256 (what the download command checks); `citation`: the version's, when the
    caller has it already (it reads the attribution file)."""
    data = readme(session, store, version, base_url, citation).encode()
    return data, hashlib.sha256(data).hexdigest()
