"""Gymnasium's MuJoCo models without the deprecated ``settotalmass`` compiler attribute.

gymnasium 1.4's ``half_cheetah.xml`` sets ``<compiler settotalmass="14"/>``, which MuJoCo 3.17 and
4.0 both reject with a deprecation warning printed on stdout by MuJoCo's default warning handler,
which also appends it to ``MUJOCO_LOG.TXT`` in the current directory - once per env made. The fix
at the source is the one the warning itself asks for: compile the model without the attribute and
then call ``mj_setTotalmass`` + ``mj_setConst`` on the compiled model. That yields exactly the
same model (masses, inertias and every derived constant bit for bit; a test steps both versions
and compares), with no warning and no log file.

:func:`quiet_model_kwargs` is called before ``gym.make`` (it adds ``xml_file=`` pointing at a
cleaned copy under the temp folder) and :func:`finish_model` after it (scales the masses).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import tempfile
from typing import Any

_ATTR = re.compile(r'\s+settotalmass="([^"]+)"')
_cache: dict[str, tuple[str, float] | None] = {}


def _default_xml(env_cls) -> str | None:
    try:
        param = inspect.signature(env_cls.__init__).parameters.get("xml_file")
    except (TypeError, ValueError):
        return None
    if param is None or not isinstance(param.default, str):
        return None
    path = param.default
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(inspect.getfile(env_cls)), "assets", path)
    return path if os.path.isfile(path) else None


def cleaned_copy(xml_path: str) -> tuple[str, float] | None:
    """(path of a copy without settotalmass, the total mass), or None when nothing needs cleaning."""
    if xml_path in _cache:
        return _cache[xml_path]
    result = None
    try:
        text = open(xml_path, encoding="utf-8").read()
    except OSError:
        text = ""
    m = _ATTR.search(text)
    # a model that includes other files by relative path must stay where it is
    if m and 'file="' not in text:
        clean = text[:m.start()] + text[m.end():]
        digest = hashlib.sha1(clean.encode()).hexdigest()[:12]
        folder = os.path.join(tempfile.gettempdir(), f"tf_rlnas-mujoco-{os.getuid() if hasattr(os, 'getuid') else 0}")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, f"{digest}-{os.path.basename(xml_path)}")
        if not os.path.exists(target):
            tmp = f"{target}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(clean)
            os.replace(tmp, target)
        result = (target, float(m.group(1)))
    _cache[xml_path] = result
    return result


def quiet_model_kwargs(env_cls, kwargs: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """``kwargs`` with ``xml_file`` set to a cleaned model when the class's default model needs it;
    and the total mass to apply after construction (None: nothing to do)."""
    if "xml_file" in kwargs:
        return kwargs, None
    xml = _default_xml(env_cls)
    found = cleaned_copy(xml) if xml else None
    if found is None:
        return kwargs, None
    return {**kwargs, "xml_file": found[0]}, found[1]


def finish_model(env, total_mass: float | None) -> None:
    """Apply what ``settotalmass`` did in the compiler: scale masses and inertias, recompute constants."""
    if total_mass is None:
        return
    import mujoco

    base = env.unwrapped
    mujoco.mj_setTotalmass(base.model, total_mass)
    mujoco.mj_setConst(base.model, base.data)
