"""`push_to_hub`: the final adapter (or model) uploaded to a Hub model repository with its model card, through
huggingface_hub's HfApi (create_repo, then upload_folder), after finished.json is written.

The repository is `hub_model_id` (default: the output folder's name, in the token's namespace), created if
missing (private with `hub_private_repo`). adapter/ or model/ goes to the repository's root, so
`from_pretrained("user/name")` opens it; merged/ (with `merge`) to its merged/ folder (`subfolder="merged"`).
The token is HF_TOKEN, else the one `hf auth login` saved; it is never printed or written (secrets.redact).
HF_ENDPOINT points at another Hub (a mirror, or a local stand-in in the tests). A push that cannot happen
(offline, no token) is refused before training starts; one that fails at the end leaves the outputs saved
and names the command that uploads them later.
"""

from __future__ import annotations

import os
from pathlib import Path

from directalign.errors import ConfigError
from directalign.secrets import redact, remember_secret

FOLDERS = ("adapter", "model", "reward_model", "merged")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def hub_token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` saved; remembered so that `redact` masks it."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if token:
        remember_secret(token)
    return token


def check_push(cfg) -> None:
    """Refuse, before any work, a push that cannot happen: offline, or no token."""
    if not getattr(cfg, "push_to_hub", False):
        return
    if _offline():
        raise ConfigError("push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it, or set "
                          "push_to_hub false and upload later with `hf upload`")
    if not hub_token():
        raise ConfigError("push_to_hub needs a Hub token: set HF_TOKEN (a write token), or run `hf auth login`")


def repo_id(cfg, out: Path) -> str:
    return cfg.hub_model_id or Path(out).resolve().name


def push_outputs(cfg, out: Path, outputs: dict[str, str]) -> list[str]:
    """Upload the run's final folders; returns what was pushed, one line each."""
    from huggingface_hub import HfApi

    check_push(cfg)
    folders = [name for name in FOLDERS if any(path.startswith(f"{name}/") for path in outputs)]
    repo = repo_id(cfg, out)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=hub_token())
    lines = []
    try:
        url = api.create_repo(repo, private=cfg.hub_private_repo, exist_ok=True)
        repo = url.repo_id
        for name in folders:
            subfolder = None if name != "merged" else "merged"
            commit = api.upload_folder(repo_id=repo, folder_path=Path(out) / name, path_in_repo=subfolder,
                                       commit_message=f"directalign {cfg.command}: {name}/")
            lines.append(f"pushed {Path(out) / name} to {url.endpoint}/{repo}"
                         f"{'/tree/main/merged' if subfolder else ''} (commit {commit.oid[:8]})")
    except Exception as err:  # noqa: BLE001 (HTTP, connection (httpx's own classes), file errors: one line each)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        folder = Path(out) / folders[0] if folders else Path(out)
        raise ConfigError(redact(f"push_to_hub {repo}: {first[:200]}; the outputs are saved in {out}: upload them "
                                 f"later with `hf upload {repo} {folder}`")) from err
    return lines
