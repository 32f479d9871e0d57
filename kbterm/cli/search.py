"""Reading the index: ``kbterm search`` and ``kbterm ask``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kbterm.cli.base import State, cli, echo, echo_json
from kbterm.textsafe import one_line

_FILE_TYPES = ["text", "markdown", "html", "json", "pdf", "image", "video"]


def _parse_when(value: str | None, name: str) -> float | None:
    """``2026-11-01``, ``2026-11-01T14:30`` or a relative ``7d`` / ``12h`` / ``30m``."""
    from kbterm.errors import InputError
    from kbterm.retrieval import WHEN_FORMATS, parse_when

    if value is None:
        return None
    try:
        return parse_when(value, name)
    except InputError:
        raise click.BadParameter(f"{value!r}: {WHEN_FORMATS}", param_hint=name) from None


def _filters(paths: tuple[str, ...], types: tuple[str, ...], modalities: tuple[str, ...],
             after: str | None, before: str | None) -> Any:
    from kbterm.retrieval import Filters

    return Filters(paths=paths, types=types, modalities=modalities,
                   modified_after=_parse_when(after, "--after"),
                   modified_before=_parse_when(before, "--before"))


def _timings(n: str, timings: dict[str, float], names: tuple[str, ...]) -> str:
    total = sum(timings.values())
    parts = ", ".join(f"{k} {timings.get(k, 0):.0f}" for k in names)
    return f"{n} in {total:.0f} ms ({parts})"


def _video_options(what: str):
    """``--video CLIP [--start S] [--end S]``: a clip as the query (with or without text)."""
    def add(f):
        f = click.option("--end", type=click.FloatRange(min=0), default=None,
                         help="Where the clip ends in the video, in seconds (default: its "
                              "end).")(f)
        f = click.option("--start", type=click.FloatRange(min=0), default=None,
                         help="Where the clip starts in the video, in seconds (default: 0).")(f)
        return click.option("--video", "video", type=click.Path(exists=True, dir_okay=False),
                            help=f"{what} (1 frame a second, at most 64).")(f)
    return add


def _medium(image: str | None, video: str | None, start: float | None, end: float | None):
    """The query's picture (its path) or clip (a Video), or None."""
    if video is None:
        if start is not None or end is not None:
            raise click.UsageError("--start and --end go with --video")
        return image
    if image is not None:
        raise click.UsageError("give an --image or a --video, not both")
    if start is not None and end is not None and end <= start:
        raise click.UsageError(f"--end ({end:g}) must come after --start ({start:g})")
    if start is not None:
        from kbterm.ingest.video import header_duration

        duration = header_duration(Path(video))
        if duration is not None and start >= duration:
            raise click.UsageError(f"--start {start:g} is past the end of {video} "
                                   f"({duration:.1f} s long)")
    from kbterm.models.inputs import Video

    return Video(video, start=start, end=end)


@cli.command()
@click.argument("query", required=False, default="")
@click.option("--image", "image", type=click.Path(exists=True, dir_okay=False),
              help="Search by an image (with or without QUERY text).")
@_video_options("Search by a video clip, with or without QUERY text")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many results.")
@click.option("--no-rerank", is_flag=True, help="Skip the reranker (faster).")
@click.option("--path", "paths", multiple=True,
              help="Only files under this folder or matching this glob (repeatable).")
@click.option("--type", "types", multiple=True, type=click.Choice(_FILE_TYPES),
              help="Only this file type (repeatable).")
@click.option("--modality", "modalities", multiple=True,
              type=click.Choice(["text", "image", "video"]),
              help="Only text passages, images (photos, PDF pages) or video segments.")
@click.option("--after", help="Only files modified after this date or age (2026-11-01, 7d).")
@click.option("--before", help="Only files modified before this date or age.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def search(state: State, query: str, image: str | None, video: str | None,
           start: float | None, end: float | None, k: int, no_rerank: bool,
           paths: tuple[str, ...], types: tuple[str, ...], modalities: tuple[str, ...],
           after: str | None, before: str | None, as_json: bool) -> None:
    """Search the index for QUERY (text), an --image or a --video clip, or both."""
    from kbterm.retrieval import Searcher

    medium = _medium(image, video, start, end)
    if not query.strip() and medium is None:
        raise click.UsageError("give a QUERY, an --image or a --video, or both")
    filters = _filters(paths, types, modalities, after, before)
    searcher = Searcher(state.config)
    results = searcher.search(query, medium, k=k, rerank=not no_rerank, filters=filters)
    if as_json:
        echo_json(results.to_json())
    else:
        for warning in results.warnings:
            echo(f"warning: {warning}", err=True)
        if not results.hits:
            echo("no results")
        for hit in results.hits:
            scores = []
            if hit.rerank_score is not None:
                scores.append(f"rerank {hit.rerank_score:.3f}")
            if hit.embedding_score is not None:
                scores.append(f"cosine {hit.embedding_score:.3f}")
            if hit.keyword_score is not None:
                scores.append(f"bm25 {hit.keyword_score:.2f}")
            icon = {"text": "¶", "image": "▣", "video": "▶"}.get(hit.modality, "·")
            echo(f"{hit.rank:>3}. {icon} {one_line(hit.citation())}  [{', '.join(scores)}]")
            echo(f"     {one_line(hit.path)}")
            if hit.modality == "text":
                echo(f"     {one_line(hit.snippet)}")
            elif hit.image_path:
                echo(f"     image: {one_line(hit.image_path)}")
        echo(_timings(f"{len(results.hits)} results", results.timings_ms,
                      ("embed", "retrieve", "rerank")), err=True)
    if not results.hits:
        raise SystemExit(1)


@cli.command()
@click.argument("question")
@click.option("--image", "image", type=click.Path(exists=True, dir_okay=False),
              help="An image the question is about (searched with the question).")
@_video_options("A video clip the question is about, searched with the question")
@click.option("--path", "paths", multiple=True, help="Only evidence under this folder or glob.")
@click.option("--type", "types", multiple=True, type=click.Choice(_FILE_TYPES),
              help="Only evidence from this file type.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer, its citations and sources as JSON.")
@click.option("--no-stream", is_flag=True, help="Print the answer when it is complete.")
@click.pass_obj
def ask(state: State, question: str, image: str | None, video: str | None,
        start: float | None, end: float | None, paths: tuple[str, ...],
        types: tuple[str, ...], as_json: bool, no_stream: bool) -> None:
    """Answer QUESTION from your files, citing them ([1] report.pdf, page 12).

    Exit status: 0 answered, 1 no index or nothing relevant, 2 usage error.
    """
    from kbterm.answer import Asker, GeneratorMissing, NoEvidence

    if not question.strip():
        raise click.UsageError("the question is empty")
    medium = _medium(image, video, start, end)
    asker = Asker(state.config)
    filters = _filters(paths, types, (), None, None)
    try:
        answer = asker.prepare(question, medium, filters)
    except NoEvidence as exc:
        if as_json:
            echo_json({"question": question, "answer": None, "error": str(exc)})
        else:
            echo(f"The knowledge base has no answer to this: {exc}.")
        raise SystemExit(1)
    for warning in answer.warnings:
        echo(f"warning: {warning}", err=True)
    stream = not (as_json or no_stream)
    try:
        for piece in asker.stream(answer):
            if stream:
                echo(piece, nl=False)
                sys.stdout.flush()
    except GeneratorMissing:
        # Still useful: the sources an answer would have come from.
        echo("Most relevant sources:\n" + answer.sources_text(), err=True)
        raise
    except KeyboardInterrupt:
        answer.cancelled = True
        echo("\n[stopped]", err=True)
        if not as_json:
            echo("\n\nSources:\n" + answer.sources_text())
        raise SystemExit(130)
    if as_json:
        echo_json(answer.to_json())
        return
    if not stream:
        echo(answer.text.strip(), nl=False)
    echo("\n\nSources:\n" + answer.sources_text())
    echo(_timings(f"answered from {len(answer.evidence)} sources", answer.timings_ms,
                  ("embed", "retrieve", "rerank", "load", "generate")), err=True)
