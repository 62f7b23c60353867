"""An in-memory virtual file system and its shell-like tools.

`VFS` holds directories and text files as nested Python dicts (a directory maps names to
children; a file is its text) plus a current working directory. Paths may be absolute or
relative to the working directory; ``.`` and ``..`` are resolved lexically (``..`` at the root
stays at the root). The tools are the VFS's bound methods ``ls, cd, pwd, cat, grep, mkdir,
write_file, mv, cp, rm`` (see `VFS.tools`); an agent's mistake (no such file, not a directory,
...) raises `ToolFailure` with a shell-like message.

Guards: nothing here touches the real disk, the network or the process environment: the file
system is a dict. Path length, path depth and name length are bounded; one file holds at most
100,000 characters, the whole tree at most 5,000 entries and 2,000,000 characters, so neither
``write_file`` nor recursive ``cp`` can exhaust memory. ``ls`` and ``grep`` cap how many
entries / matches they return. ``grep`` matches plain text, never a regular expression, so a
pattern cannot backtrack catastrophically. Does not guard: CPU time of a single call is linear
in the size of the tree (bounded by the limits above), and there are no permissions, links or
binary files.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable
from typing import Any

from agentopd.tools.core import ToolFailure

MAX_PATH_CHARS = 512
MAX_DEPTH = 24
MAX_NAME_CHARS = 128
MAX_FILE_CHARS = 100_000
MAX_TOTAL_CHARS = 2_000_000
MAX_NODES = 5_000
MAX_LS_ENTRIES = 200
MAX_GREP_MATCHES = 100
MAX_GREP_LINE_CHARS = 200
MAX_PATTERN_CHARS = 200

TOOL_NAMES = ("ls", "cd", "pwd", "cat", "grep", "mkdir", "write_file", "mv", "cp", "rm")
READ_TOOLS = frozenset({"ls", "cd", "pwd", "cat", "grep"})
"""Tools that do not change the tree (``cd`` only moves the working directory)."""

Parts = tuple[str, ...]


def fmt(parts: Parts) -> str:
    """The absolute path string of `parts`."""
    return "/" + "/".join(parts)


def _count(node: Any) -> tuple[int, int]:
    """(entries, characters) in a subtree, the subtree's own entry included (iterative)."""
    n, c, stack = 0, 0, [node]
    while stack:
        cur = stack.pop()
        n += 1
        if isinstance(cur, str):
            c += len(cur)
        else:
            stack.extend(cur.values())
    return n, c


def _height(node: Any) -> int:
    """Levels below `node` (0 for a file or an empty directory), iterative: a walk never
    depends on the recursion limit."""
    best, stack = 0, [(node, 0)]
    while stack:
        cur, d = stack.pop()
        best = max(best, d)
        if isinstance(cur, dict):
            stack.extend((child, d + 1) for child in cur.values())
    return best


class VFS:
    """A small in-memory file system with a current working directory."""

    def __init__(
        self,
        files: dict[str, str] | None = None,
        dirs: list[str] | tuple[str, ...] = (),
        cwd: str = "/",
    ):
        self.root: dict[str, Any] = {}
        self.cwd: Parts = ()
        for d in dirs:
            self._makedirs(self._parts(d, "init"), "init", d)
        for path, content in (files or {}).items():
            parts = self._parts(path, "init")
            if not parts:
                raise ValueError("init: '/' cannot be a file")
            parent = self._makedirs(parts[:-1], "init", path)
            parent[parts[-1]] = str(content)
        target = self._parts(cwd, "init")
        if not isinstance(self._get(target), dict):
            raise ValueError(f"init: working directory {cwd!r} is not a directory")
        self.cwd = target

    # ---- state ----------------------------------------------------------------------------
    def copy(self) -> VFS:
        other = VFS.__new__(VFS)
        other.root = _copy.deepcopy(self.root)
        other.cwd = self.cwd
        return other

    def snapshot(self) -> dict[str, str | None]:
        """Every path except ``/``: a file's text, or None for a directory."""
        out: dict[str, str | None] = {}

        def walk(node: dict[str, Any], prefix: Parts) -> None:
            for name in sorted(node):
                child, parts = node[name], prefix + (name,)
                if isinstance(child, dict):
                    out[fmt(parts)] = None
                    walk(child, parts)
                else:
                    out[fmt(parts)] = child

        walk(self.root, ())
        return out

    def tools(self) -> list[Callable[..., str]]:
        """The tool functions, bound to this file system."""
        return [getattr(self, name) for name in TOOL_NAMES]

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run tool `name` with `arguments` (raises ToolFailure on an agent mistake)."""
        if name not in TOOL_NAMES:
            raise ToolFailure(f"{name}: unknown tool")
        return getattr(self, name)(**arguments)

    def resolve(self, path: str, cmd: str = "path") -> str:
        """The absolute, normalized form of `path` (lexical; the path need not exist)."""
        return fmt(self._parts(path, cmd))

    # ---- internals ------------------------------------------------------------------------
    def _parts(self, path: str, cmd: str) -> Parts:
        if not isinstance(path, str):
            raise ToolFailure(f"{cmd}: path must be a string")
        if not path.strip():
            raise ToolFailure(f"{cmd}: missing file operand")
        if len(path) > MAX_PATH_CHARS:
            raise ToolFailure(f"{cmd}: path longer than {MAX_PATH_CHARS} characters")
        if "\0" in path:
            raise ToolFailure(f"{cmd}: path contains a NUL character")
        path = path.strip()
        parts = [] if path.startswith("/") else list(self.cwd)
        for seg in path.split("/"):
            if seg in ("", "."):
                continue
            if seg == "..":
                if parts:
                    parts.pop()
                continue
            if len(seg) > MAX_NAME_CHARS:
                raise ToolFailure(f"{cmd}: {path}: File name too long")
            parts.append(seg)
            if len(parts) > MAX_DEPTH:
                raise ToolFailure(f"{cmd}: {path}: path deeper than {MAX_DEPTH} levels")
        return tuple(parts)

    def _get(self, parts: Parts) -> Any:
        """The node at `parts`, or None when it (or a directory on the way) is missing."""
        node: Any = self.root
        for p in parts:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node

    def _lookup(self, parts: Parts, cmd: str, shown: str) -> Any:
        """The node at `parts`; ToolFailure with a shell-like message when missing."""
        node: Any = self.root
        for p in parts:
            if not isinstance(node, dict):
                raise ToolFailure(f"{cmd}: {shown}: Not a directory")
            if p not in node:
                raise ToolFailure(f"{cmd}: {shown}: No such file or directory")
            node = node[p]
        return node

    def _parent(self, parts: Parts, cmd: str, shown: str) -> dict[str, Any]:
        parent = self._lookup(parts[:-1], cmd, shown)
        if not isinstance(parent, dict):
            raise ToolFailure(f"{cmd}: {shown}: Not a directory")
        return parent

    def _makedirs(self, parts: Parts, cmd: str, shown: str) -> dict[str, Any]:
        node = self.root
        for p in parts:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ToolFailure(f"{cmd}: cannot create directory '{shown}': Not a directory")
            node = child
        return node

    def _check_room(self, cmd: str, add_nodes: int, add_chars: int) -> None:
        nodes, chars = _count(self.root)
        if nodes + add_nodes > MAX_NODES:
            raise ToolFailure(f"{cmd}: file system full (at most {MAX_NODES} entries)")
        if chars + add_chars > MAX_TOTAL_CHARS:
            raise ToolFailure(f"{cmd}: file system full (at most {MAX_TOTAL_CHARS} characters)")

    def _follow_moved(self, old: Parts, new: Parts | None) -> None:
        """Keep the working directory valid after `old` moved to `new` (None: removed)."""
        if self.cwd[: len(old)] == old:
            self.cwd = old[:-1] if new is None else new + self.cwd[len(old) :]

    def _target(self, src: Parts, dst: str, cmd: str) -> Parts:
        """Where `src` goes for ``mv``/``cp`` to `dst`: into `dst` when it is a directory."""
        dparts = self._parts(dst, cmd)
        if isinstance(self._get(dparts), dict):
            return dparts + (src[-1],)
        if dst.strip().endswith("/") and dparts:
            raise ToolFailure(f"{cmd}: {dst}: Not a directory")
        return dparts

    # ---- tools ----------------------------------------------------------------------------
    def ls(self, path: str = ".") -> str:
        """List the entries of a directory, one per line; directory names end with '/'.

        Args:
            path: Directory (or file) to list, absolute like "/notes" or relative to the current directory. Defaults to the current directory.
        """
        parts = self._parts(path or ".", "ls")
        node = self._lookup(parts, "ls", path)
        if isinstance(node, str):
            return fmt(parts)
        names = [n + "/" if isinstance(node[n], dict) else n for n in sorted(node)]
        if not names:
            return "(empty directory)"
        if len(names) > MAX_LS_ENTRIES:
            more = len(names) - MAX_LS_ENTRIES
            names = names[:MAX_LS_ENTRIES] + [f"... and {more} more entries"]
        return "\n".join(names)

    def cd(self, path: str) -> str:
        """Change the current working directory and return the new one.

        Args:
            path: Directory to move to, absolute or relative (".." is the parent).
        """
        parts = self._parts(path, "cd")
        node = self._lookup(parts, "cd", path)
        if not isinstance(node, dict):
            raise ToolFailure(f"cd: {path}: Not a directory")
        self.cwd = parts
        return fmt(parts)

    def pwd(self) -> str:
        """Return the current working directory."""
        return fmt(self.cwd)

    def cat(self, path: str) -> str:
        """Return the text of a file.

        Args:
            path: File to read, absolute like "/notes/todo.txt" or relative to the current directory.
        """
        parts = self._parts(path, "cat")
        node = self._lookup(parts, "cat", path)
        if isinstance(node, dict):
            raise ToolFailure(f"cat: {path}: Is a directory")
        return node if node else "(empty file)"

    def grep(self, pattern: str, path: str) -> str:
        """Find the lines that contain a text in a file, or in every file under a directory.

        Each match is shown as <file path>:<line number>:<line>, followed by the number of matching lines.

        Args:
            pattern: Plain text to look for (case-sensitive, not a regular expression).
            path: File or directory to search; directories are searched recursively.
        """
        if not pattern:
            raise ToolFailure("grep: empty pattern")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ToolFailure(f"grep: pattern longer than {MAX_PATTERN_CHARS} characters")
        parts = self._parts(path, "grep")
        node = self._lookup(parts, "grep", path)
        files: list[tuple[Parts, str]] = []

        def walk(n: Any, at: Parts) -> None:
            if isinstance(n, str):
                files.append((at, n))
                return
            for name in sorted(n):
                walk(n[name], at + (name,))

        walk(node, parts)
        matches: list[str] = []
        total = 0
        for at, text in files:
            for i, line in enumerate(text.splitlines(), 1):
                if pattern in line:
                    total += 1
                    if len(matches) < MAX_GREP_MATCHES:
                        shown = line if len(line) <= MAX_GREP_LINE_CHARS else line[:MAX_GREP_LINE_CHARS] + "..."
                        matches.append(f"{fmt(at)}:{i}:{shown}")
        if not total:
            return "no matches"
        if total > len(matches):
            matches.append(f"... {total - len(matches)} more matching lines not shown")
        matches.append(f"{total} matching line" + ("" if total == 1 else "s"))
        return "\n".join(matches)

    def mkdir(self, path: str) -> str:
        """Create a directory, including any missing parent directories.

        Args:
            path: Directory to create, absolute or relative. An existing directory is left as it is.
        """
        parts = self._parts(path, "mkdir")
        if not parts:
            return "/ already exists"
        node = self._get(parts)
        if isinstance(node, dict):
            return f"{fmt(parts)} already exists"
        if node is not None:
            raise ToolFailure(f"mkdir: cannot create directory '{path}': File exists")
        missing = sum(1 for i in range(1, len(parts) + 1) if self._get(parts[:i]) is None)
        self._check_room("mkdir", missing, 0)
        self._makedirs(parts, "mkdir", path)
        return f"Created directory {fmt(parts)}"

    def write_file(self, path: str, content: str, append: bool = False) -> str:
        """Write text to a file, creating it or replacing its content; its directory must exist.

        Args:
            path: File to write, absolute or relative.
            content: The text to write. End each line with a newline character.
            append: If true, add the text at the end of the file instead of replacing it.
        """
        if len(content) > MAX_FILE_CHARS:
            raise ToolFailure(f"write_file: content longer than {MAX_FILE_CHARS} characters")
        parts = self._parts(path, "write_file")
        if not parts or path.strip().endswith("/"):
            raise ToolFailure(f"write_file: {path}: Is a directory")
        parent = self._parent(parts, "write_file", path)
        old = parent.get(parts[-1])
        if isinstance(old, dict):
            raise ToolFailure(f"write_file: {path}: Is a directory")
        new = (old or "") + content if append else content
        if len(new) > MAX_FILE_CHARS:
            raise ToolFailure(f"write_file: {path}: file would exceed {MAX_FILE_CHARS} characters")
        self._check_room("write_file", 0 if old is not None else 1, len(new) - len(old or ""))
        parent[parts[-1]] = new
        verb = "Appended" if append else "Wrote"
        return f"{verb} {len(content)} characters to {fmt(parts)}"

    def mv(self, src: str, dst: str) -> str:
        """Move or rename a file or directory. If dst is an existing directory, src is moved into it.

        Args:
            src: File or directory to move.
            dst: New path, or an existing directory to move src into.
        """
        return self._move_or_copy("mv", src, dst)

    def cp(self, src: str, dst: str) -> str:
        """Copy a file (or a directory, recursively). If dst is an existing directory, the copy goes into it.

        Args:
            src: File or directory to copy.
            dst: Path of the copy, or an existing directory to copy src into.
        """
        return self._move_or_copy("cp", src, dst)

    def rm(self, path: str) -> str:
        """Delete a file, or a directory together with everything in it.

        Args:
            path: File or directory to delete.
        """
        parts = self._parts(path, "rm")
        if not parts:
            raise ToolFailure("rm: refusing to remove '/'")
        self._lookup(parts, "rm", path)
        parent = self._parent(parts, "rm", path)
        del parent[parts[-1]]
        self._follow_moved(parts, None)
        return f"Removed {fmt(parts)}"

    def _move_or_copy(self, cmd: str, src: str, dst: str) -> str:
        sparts = self._parts(src, cmd)
        verb = "move" if cmd == "mv" else "copy"
        if not sparts:
            raise ToolFailure(f"{cmd}: cannot {verb} '/'")
        node = self._get(sparts)
        if node is None:
            self._lookup(sparts, cmd, src)  # raises the precise reason
        dparts = self._target(sparts, dst, cmd)
        if dparts == sparts:
            raise ToolFailure(f"{cmd}: '{src}' and '{dst}' are the same file")
        if dparts[: len(sparts)] == sparts:
            raise ToolFailure(
                f"{cmd}: cannot {verb} '{src}' to a subdirectory of itself, '{fmt(dparts)}'"
            )
        if len(dparts) + _height(node) > MAX_DEPTH:  # mkdir + mv could otherwise nest without end
            raise ToolFailure(f"{cmd}: {dst}: the result would be deeper than {MAX_DEPTH} levels")
        parent = self._parent(dparts, cmd, dst)
        existing = parent.get(dparts[-1])
        if isinstance(existing, dict):
            raise ToolFailure(f"{cmd}: cannot overwrite directory '{fmt(dparts)}'")
        if existing is not None and isinstance(node, dict):
            raise ToolFailure(
                f"{cmd}: cannot overwrite non-directory '{fmt(dparts)}' with directory '{src}'"
            )
        if cmd == "cp":
            n, c = _count(node)
            self._check_room(cmd, n, c - len(existing or ""))
            parent[dparts[-1]] = _copy.deepcopy(node)
            return f"Copied {fmt(sparts)} to {fmt(dparts)}"
        del self._get(sparts[:-1])[sparts[-1]]
        parent[dparts[-1]] = node
        self._follow_moved(sparts, dparts)
        return f"Moved {fmt(sparts)} to {fmt(dparts)}"
