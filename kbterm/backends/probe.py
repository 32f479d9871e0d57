"""``kbterm doctor``'s checks of a model server: probe inputs, and plain words when the
answers look wrong.

vLLM has open bugs on these models (reranker image scores stuck near 0.5, vllm#33885 and
#34502; prompts built without the chat template, so instructions and pictures are lost; the
README's "For users who outgrow one machine" gives the commands that avoid them).  A server that drops the instruction gives one vector whatever the
instruction; one that drops pictures gives two different pictures the same vector or score.
When the same checkpoint is on this machine, the server's vectors and scores are compared with
the in-process ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kbterm.errors import KbtermError

SAME = 1 - 1e-6  # cosine above which two vectors are "the same"


@dataclass
class ProbeResult:
    role: str
    ok: bool
    findings: list[str] = field(default_factory=list)  # what looks wrong, in plain words
    facts: list[str] = field(default_factory=list)  # what was seen


def _pictures() -> tuple[Any, Any]:
    from PIL import Image

    x = np.linspace(0, 255, 96, dtype=np.float32)
    gradient = np.stack(np.broadcast_arrays(x[None, :], x[:, None], 255 - x[None, :]), -1)
    checks = ((np.indices((96, 96)).sum(0) // 12) % 2 * 255).astype(np.uint8)
    return (Image.fromarray(gradient.astype(np.uint8), "RGB"),
            Image.fromarray(np.stack([checks] * 3, -1), "RGB"))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def probe_embedder(backend: Any, query_instruction: str, reference: Any = None) -> ProbeResult:
    from kbterm.models.inputs import Image

    out = ProbeResult("embedder", True)
    red, checks = _pictures()
    text = "kbterm probe: a note about the budget meeting"
    doc = backend.embed([text])[0]
    query = backend.embed([text], instruction=query_instruction)[0]
    pics = backend.embed([Image(red), Image(checks)])
    out.facts.append(f"vectors of size {doc.shape[0]}")
    if _cos(doc, query) > SAME:
        out.findings.append("the same text gives the same vector with the document and the "
                            "query instruction: the server ignores the system message (it "
                            "does not apply the chat template to `messages`)")
    if _cos(pics[0], pics[1]) > SAME:
        out.findings.append("two different pictures give the same vector: the server drops "
                            "images (photos and pages will not be found)")
    if reference is not None:
        ref = np.concatenate([reference.embed([text]), reference.embed([Image(red)])])
        low = min(_cos(doc, ref[0]), _cos(pics[0], ref[1]))
        out.facts.append(f"cosine with the in-process model: {low:.6f}")
        if low < 0.999:
            out.findings.append(f"its vectors differ from the in-process model's on the same "
                                f"checkpoint (cosine {low:.4f}): the prompt or the pictures "
                                "are not what the model contract says")
    out.ok = not out.findings
    return out


def probe_reranker(backend: Any, reference: Any = None) -> ProbeResult:
    from kbterm.models.inputs import Image

    out = ProbeResult("reranker", True)
    red, checks = _pictures()
    docs = ["kbterm is a knowledge base in the terminal", Image(red), Image(checks)]
    scores = backend.score("what is kbterm?", docs)
    other = backend.score("what is kbterm?", docs[:1], instruction="Judge the spelling only.")
    out.facts.append("scores " + ", ".join(f"{s:.4f}" for s in scores))
    if not all(0 < s < 1 for s in scores):
        out.findings.append("scores fall outside (0, 1): not the reranker's yes/no sigmoid")
    if abs(scores[1] - scores[2]) < 1e-6 and abs(scores[1] - 0.5) < 0.02:
        out.findings.append("two different pictures both score about 0.5: the server does "
                            "not see images (vLLM's image reranking bug, vllm#33885): image "
                            "results will be ordered by the vector search alone")
    if abs(other[0] - scores[0]) < 1e-7:
        out.findings.append("the instruction does not change the score: the server ignores "
                            "it (check the reranker chat template)")
    if reference is not None:
        ref = reference.score("what is kbterm?", docs)
        worst = max(abs(a - b) for a, b in zip(scores, ref))
        out.facts.append(f"largest difference from the in-process model: {worst:.2e}")
        if worst > 1e-2:
            out.findings.append(f"its scores differ from the in-process model's by up to "
                                f"{worst:.3f} on the same checkpoint")
    out.ok = not out.findings
    return out


def probe_generator(backend: Any) -> ProbeResult:
    out = ProbeResult("generator", True)
    stream = backend.stream("Say hello.", [], max_new_tokens=4)
    try:
        text = "".join(stream)
    finally:
        stream.close()
    out.facts.append(f"streamed {len(text)} characters")
    return out


def probe(role: str, backend: Any, query_instruction: str, reference: Any = None
          ) -> ProbeResult:
    """Probe one role's server; a server that cannot be reached is a finding, not a crash."""
    try:
        if role == "embedder":
            return probe_embedder(backend, query_instruction, reference)
        if role == "reranker":
            return probe_reranker(backend, reference)
        return probe_generator(backend)
    except KbtermError as exc:
        return ProbeResult(role, False, [str(exc)])
