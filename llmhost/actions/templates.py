"""Jinja2 rendering of the files under templates/ (Dockerfiles, compose, drop-ins)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

# llmhost/_templates (beside this folder) is a symlink to the top-level templates/ in a checkout;
# a wheel carries the files themselves there (package data), so one path serves both.
TEMPLATE_DIRS = (Path(__file__).parents[1] / "_templates",)


@cache
def _environment() -> Any:
    import jinja2

    dirs = [str(d) for d in TEMPLATE_DIRS if d.is_dir()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Dockerfiles and YAML, not HTML
    )
    # JSON quoting is valid YAML and exec-form Dockerfile syntax; unlike `tojson` it does not
    # HTML-escape <, > and &, so rendered files stay readable.
    env.filters["q"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def render(name: str, **variables: Any) -> str:
    return _environment().get_template(name).render(**variables)
