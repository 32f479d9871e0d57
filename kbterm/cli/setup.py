"""Setting kbterm up: ``kbterm doctor``, ``kbterm pull``, ``kbterm folders``."""

from __future__ import annotations

import click

from kbterm.cli.base import State, cli, echo, echo_json


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--load", "load", is_flag=True,
              help="Also load each model (or reach its server), run one small inference, "
                   "measure its latency, and compare a server with the in-process model "
                   "when the checkpoint is here.")
@click.pass_obj
def doctor(state: State, as_json: bool, load: bool) -> None:
    """Show the config file, the configured models, whether each is downloaded, where each
    runs and why, and whether a model server's answers look right."""
    from kbterm.doctor import check_loading, diagnose, render

    report = diagnose(state.config, state.config_path, compare=load)
    checks = check_loading(state.config) if load else []
    if as_json:
        data = report.to_dict()
        if load:
            data["load"] = [c.__dict__ for c in checks]
        echo_json(data)
    else:
        echo(render(report))
        if load:
            echo("\nload check")
            for c in checks:
                echo(f"  {c.role:<10} {'ok' if c.ok else 'error'}: {c.detail}")
    if any(not c.ok for c in checks) or any(not p.ok for p in report.probes):
        raise SystemExit(1)


@cli.command()
@click.argument("roles", nargs=-1, type=click.Choice(["embedder", "reranker", "generator", "all"]))
@click.option("--tokenizer-only", is_flag=True,
              help="Only the tokenizer file (what a machine whose embedder runs on a server "
                   "needs to cut text into chunks).")
@click.pass_obj
def pull(state: State, roles: tuple[str, ...], tokenizer_only: bool) -> None:
    """Download the configured models (all three by default), with progress bars."""
    from kbterm.models.registry import model_spec
    from kbterm.models.runtime import ROLES, download_model, is_local_spec

    wanted = ROLES if not roles or "all" in roles else tuple(r for r in ROLES if r in roles)
    if tokenizer_only:
        from kbterm.backends.tokenizer import hub_tokenizer

        for role in wanted:
            spec = model_spec(state.config, role)
            hub_tokenizer(spec.model, source=spec.source)
            echo(f"{role}: tokenizer of {spec.model} ready")
        return
    for role in wanted:
        spec = model_spec(state.config, role)
        if is_local_spec(spec.model):
            echo(f"{role}: {spec.model} is a local folder, nothing to download")
            continue
        echo(f"{role}: fetching {spec.model} from {spec.source}", err=True)
        path = download_model(spec.model, role, source=spec.source)
        echo(f"{role}: {path}")


@cli.group()
def folders() -> None:
    """The folders kbterm indexes and watches ([library] folders in the config file)."""


@folders.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the folders as JSON.")
@click.pass_obj
def folders_list(state: State, as_json: bool) -> None:
    """List the folders, and whether each is there."""
    import os

    from kbterm.folders import target_file

    file = target_file(state.config_path)
    listed = state.config.library.folders
    if as_json:
        echo_json({"config_file": str(file), "folders": [
            {"path": f, "exists": os.path.isdir(os.path.expanduser(f))} for f in listed]})
        return
    if not listed:
        echo(f"no folders yet ({file}); add one: kbterm folders add ~/Documents")
        return
    for f in listed:
        missing = "" if os.path.isdir(os.path.expanduser(f)) else "  (missing)"
        echo(f"{f}{missing}")


@folders.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.pass_obj
def folders_add(state: State, paths: tuple[str, ...]) -> None:
    """Add folders to index (creates the config file if there is none)."""
    from kbterm.folders import add_folders

    change = add_folders(list(paths), state.config_path, state.config.data_path)
    if change.created:
        echo(f"created {change.config_file}")
    for f in change.changed:
        echo(f"added {f}")
    for f in change.unchanged:
        echo(f"{f} is listed already")
    for note in change.notes:
        echo(f"note: {note}", err=True)
    if change.changed:
        echo(_next_step(state), err=True)


@folders.command("remove")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.pass_obj
def folders_remove(state: State, paths: tuple[str, ...]) -> None:
    """Stop indexing folders: they leave the config, their files leave the index."""
    from kbterm.config import load_config
    from kbterm.errors import InputError
    from kbterm.folders import remove_folders
    from kbterm.indexer import Indexer
    from kbterm.lock import LockHeld

    change = remove_folders(list(paths), state.config_path)
    for f in change.changed:
        echo(f"removed {f}")
    config = load_config(state.config_path)
    try:
        gone = Indexer(config, command="kbterm folders remove").forget(
            list(paths), keep=change.folders)
    except LockHeld as exc:
        echo(f"{exc}; its files stay in the index until you stop it (kbterm watch --stop) "
             "and run kbterm folders remove again", err=True)
        return
    if gone:
        echo(f"{gone} file(s) left the index", err=True)
    elif change.unchanged and not change.changed:
        listed = ", ".join(change.folders) or "none"
        raise InputError(f"{', '.join(change.unchanged)} is not in [library] folders "
                         f"(they are: {listed}) and has no files in the index")


def _next_step(state: State) -> str:
    from kbterm.watchstate import read_state

    info = read_state(state.config.data_path)
    if info is not None and info.running:
        return ("the running watcher still follows the old list: restart it "
                "(kbterm watch --stop, then kbterm watch --detach)")
    return "run kbterm index to index them (or kbterm watch to keep them in step)"
