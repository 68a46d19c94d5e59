"""Griffe extension for the API reference (mkdocs.yml): the docstrings' Sphinx roles
(``:meth:`load```, ``:class:`~cleancut.options.RemoveOptions```, ``:mod:`cleancut.explain```)
become Markdown, since mkdocstrings shows them as literal text.

A role whose target is rendered on the reference page (an object named by a ``:::`` line of
docs/reference.md, or one of its documented public members) becomes a cross-reference to it;
any other role becomes inline code. Targets are resolved as Sphinx does: a dotted path as it
stands, a leading ``.`` relative to the object's package, a bare name as a member of the object,
then of its parent, then of its module. ``~`` shows only the last part of the name.
"""

from __future__ import annotations

import re
from pathlib import Path

import griffe

ROLE = re.compile(r":(?:py:)?(?:meth|func|class|mod|attr|data|exc|obj|const):`(~?)([^`<>]+?)(?:\(\))?`")
REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def rendered_ids(reference: Path = REFERENCE) -> set[str]:
    """The identifiers the reference page renders with ``:::``."""
    return set(re.findall(r"^::: *([\w.]+)", reference.read_text(), re.M))


class SphinxRoles(griffe.Extension):
    def __init__(self) -> None:
        self.rendered = rendered_ids()

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for name in list(self.rendered):  # a re-exported object is rendered under both of its paths
            found = self._find(pkg, name)
            if found is not None and found.is_alias:
                self.rendered.add(found.target_path)
        self._walk(pkg, pkg)

    def _walk(self, obj: griffe.Object, root: griffe.Module) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(lambda m: self._markdown(obj, root, m.group(1), m.group(2)),
                                           obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, root)

    def _markdown(self, obj: griffe.Object, root: griffe.Module, tilde: str, target: str) -> str:
        shown = target.rsplit(".", 1)[-1] if tilde else target.lstrip(".")
        path = self._resolve(obj, root, target)
        if path and self._is_rendered(root, path):
            return f"[`{shown}`][{path}]"
        return f"`{shown}`"

    @staticmethod
    def _find(root: griffe.Module, path: str) -> griffe.Object | None:
        if path != root.path and not path.startswith(root.path + "."):
            return None
        try:
            return root[path[len(root.path) + 1:]] if path != root.path else root
        except (KeyError, griffe.AliasResolutionError, ValueError):
            return None

    def _resolve(self, obj: griffe.Object, root: griffe.Module, target: str) -> str | None:
        if target.startswith("."):  # relative to the object's package
            package = obj.module.path if obj.module.is_package else obj.module.path.rsplit(".", 1)[0]
            candidates = [f"{package}.{target[1:]}"]
        elif target.startswith(root.path + "."):
            candidates = [target]
        else:
            scopes = [obj, obj.parent, obj.module]
            candidates = [f"{s.path}.{target}" for s in scopes if s is not None]
        for path in candidates:
            found = self._find(root, path)
            if found is not None:
                return found.target_path if found.is_alias else found.path
        return None

    def _is_rendered(self, root: griffe.Module, path: str) -> bool:
        if path in self.rendered:
            return True
        parent, _, name = path.rpartition(".")
        if parent not in self.rendered or name.startswith("_"):
            return False
        member = self._find(root, path)
        return member is not None and not member.is_alias and member.docstring is not None
