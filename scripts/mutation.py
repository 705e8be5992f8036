#!/usr/bin/env python3
"""Mutation testing of batchq's core, run by hand (never in CI): how much of it do the tests pin down?

    nice -n 19 .venv/bin/python scripts/mutation.py                 # every mutant
    nice -n 19 .venv/bin/python scripts/mutation.py --sample 150    # a seeded random sample
    .venv/bin/python scripts/mutation.py --list                      # the mutants, nothing run
    .venv/bin/python scripts/mutation.py --show 'engine.py:Step.settle:…'   # one mutant's diff

What is mutated (TARGETS): app/domain/rules.py, app/domain/states.py and app/services/engine.py
whole, and the status/counter lines of app/services/orchestrator.py (lines that read or change a
status, a count, the batch's error or its progress: ORCHESTRATOR_LINES). Each mutant changes one
thing (OPERATORS below): a comparison, an arithmetic or boolean operator, a constant, a status
or kind for another one, one element of a tuple, one entry of a transition table, a call or
assignment or raise removed, a return value dropped, an `if` negated. Docstrings, exception
messages, f-strings, annotations, asserts and the tables' descriptions are not mutated.

How a mutant is run: the source is parsed, one node changed, and the module compiled from the
changed tree and served by an import hook to a fresh pytest process, so the repository's files
never change and an interrupted run leaves nothing behind. A first pass (cached in .mutation/)
records which tests execute which lines of the targets; a mutant then runs only the tests that
execute its line: tests/unit first (no server, in about two seconds), then the SQLite subset
of the behaviour suite (BEHAVIOUR, BATCHQ_TEST_BACKENDS=sqlite), stopping at the first failure.
A mutant is killed when a test fails, errors or times out; it survives when they all pass or
when no test executes its line. Mutants listed in EQUIVALENT (with why) are left out of the rate.

The run prints the kill rate per file and every survivor (`--show KEY` prints its diff).
The machine is shared: run it under `nice`; `--jobs 2` runs two mutants at a time.
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib.abc
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".mutation"

TARGETS = {
    "app/domain/rules.py": "app.domain.rules",
    "app/domain/states.py": "app.domain.states",
    "app/services/engine.py": "app.services.engine",
    "app/services/orchestrator.py": "app.services.orchestrator",
}
# The lines of orchestrator.py that are mutated: those about statuses and counts.
ORCHESTRATOR_LINES = re.compile(
    r"status|Status\.|move_|counts|\.jobs\b|\.comps\b|failing|finished|\.error\b|retried|settle|progressed"
    r"|fill\(|announced|attempt_base|attempts|JobKind\.|expired"
)
UNIT = ["tests/unit"]
BEHAVIOUR = ["tests/test_core.py", "tests/test_failures.py", "tests/test_dynamic.py", "tests/test_callbacks.py",
             "tests/test_crash_safety.py"]  # fmt: skip
ENUMS = {"JobStatus", "BatchStatus", "JobKind", "AttemptStatus", "BatchType", "FailurePolicy", "BS"}
ALIASES = ["W", "Q", "R", "C", "F", "X"]  # states.py's short names of the job statuses

# Mutants that change nothing a caller can observe, by key (as --list prints them), with why.
EQUIVALENT: dict[str, str] = {
    # rules.py
    "rules.py:dispatch_slots: compare `batch.jobs.waiting <= 0` -> `batch.jobs.waiting < 0`":
        "with no job waiting both later branches return 0 too (waiting, or max(0, min(0, …)))",
    "rules.py:backoff_delay: compare `base <= 0` -> `base < 0`":
        "a base of exactly 0 then returns min(cap, 0 · 2^n) = 0.0, the same value",
    # engine.py
    "engine.py:Step.__post_init__: constant `0` -> `1`":
        "a Step is only ever made with its batch loaded or just created (uow.batch is never None there)",
    "engine.py:<module>: constant `5000` -> `5001`":
        "the chunk size only decides how many new jobs are written at a time, not which or where",
    "engine.py:Step.job_failed: constant `False` -> `True`":
        "start_compensations([job], …) of a parallel batch gets one original: sequential or not, that one is dispatched",
    "engine.py:Step.next_compensation: enum `BatchStatus.CANCELLED` -> `BatchStatus.RUNNING`":
        "next_compensation runs only when a compensation ends, i.e. in a chain saga (status compensating) or a "
        "parallel batch; a cancelled batch has no running compensation left to report, so neither status occurs",
    "engine.py:Step.next_compensation: boolean `batch.type != BatchType.CHAIN or batch.status == BatchStatus.CANCELLED` -> "
    "`batch.type != BatchType.CHAIN and batch.status == BatchStatus.CANCELLED`":
        "a parallel batch dispatches all its compensations at once (none waits), so going on finds nothing to start",
    # orchestrator.py
    "orchestrator.py:Orchestrator.heartbeat.op: boolean `job.status != JobStatus.RUNNING or job.attempts != attempt` -> "
    "`job.status != JobStatus.RUNNING and job.attempts != attempt`":
        "what it lets through has another attempt's lease or none (a lease is cleared when its attempt ends), so "
        "_check_lease refuses it with the same 409",
    "orchestrator.py:Orchestrator._apply: compare `0 < report.attempt < job.attempts` -> `0 <= report.attempt < job.attempts`":
        "attempt 0 never reaches here: the API refuses an attempt below 1 (422) and the SDK sends the message's own",
}


# ---- making mutants --------------------------------------------------------------------------------


@dataclass
class Mutant:
    file: str
    index: int  # its place in the file's list (the child process rebuilds the same list)
    line: int
    span: tuple[int, int]  # the lines of the statement it sits in
    scope: str  # enclosing function (qualified), or <module>
    op: str
    before: str
    after: str
    key: str = ""


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Nodes never mutated, with all they contain: annotations, asserts, raise messages, f-strings,
    TYPE_CHECKING blocks, imports, decorators, and the descriptions in the transition tables."""
    skip: set[int] = set()

    def drop(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            drop(node.returns)
            for a in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs, node.args.vararg, node.args.kwarg]:
                if a is not None:
                    drop(a.annotation)
            for d in node.decorator_list:
                drop(d)
        elif isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        elif isinstance(node, (ast.Assert, ast.Import, ast.ImportFrom, ast.JoinedStr)):
            drop(node)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in [*node.exc.args, *(k.value for k in node.exc.keywords)]:
                drop(arg)
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            drop(node)
        if isinstance(node, (ast.AnnAssign, ast.Assign)) and isinstance(node.value, ast.Dict):
            names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
            if any(n.endswith("_MOVES") for n in names):
                for v in node.value.values:
                    drop(v)
    return skip


CMP_SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
            ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}  # fmt: skip
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
            ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}  # fmt: skip


def _enum_members() -> dict[str, list[str]]:
    """Members of the status and kind enums, read from states.py's source (nothing imported)."""
    tree = ast.parse((ROOT / "app/domain/states.py").read_text())
    members: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = [t.id for s in node.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)]
            if names:
                members[node.name] = names
    members["BS"] = members["BatchStatus"]
    return members


def _replacements(node: ast.AST, parent: ast.AST | None, members: dict[str, list[str]], docs: set[int]):  # noqa: ANN202
    """(operator name, function that changes a deep copy of the node's tree) for one node."""
    out = []
    if isinstance(node, ast.Compare):
        for i, o in enumerate(node.ops):
            if type(o) in CMP_SWAP:
                out.append(("compare", lambda n, i=i: n.ops.__setitem__(i, CMP_SWAP[type(n.ops[i])]())))
    elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
        out.append(("arith", lambda n: setattr(n, "op", BIN_SWAP[type(n.op)]())))
    elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
        out.append(("augassign", lambda n: setattr(n, "op", ast.Sub() if isinstance(n.op, ast.Add) else ast.Add())))
    elif isinstance(node, ast.BoolOp):
        out.append(("boolean", lambda n: setattr(n, "op", ast.Or() if isinstance(n.op, ast.And) else ast.And())))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append(("unary", "operand"))
    elif isinstance(node, ast.Constant) and id(node) not in docs:
        v = node.value
        if isinstance(v, bool):
            out.append(("constant", lambda n: setattr(n, "value", not n.value)))
        elif isinstance(v, (int, float)):
            out.append(("constant", lambda n: setattr(n, "value", n.value + 1)))
        elif isinstance(v, str) and v:
            out.append(("string", lambda n: setattr(n, "value", "XX" + n.value + "XX")))
    elif isinstance(node, ast.Name) and node.id in ("min", "max") and isinstance(parent, ast.Call) and parent.func is node:
        out.append(("min/max", lambda n: setattr(n, "id", "max" if n.id == "min" else "min")))
    elif isinstance(node, ast.Name) and node.id in ALIASES and isinstance(node.ctx, ast.Load):
        out.append(("status", lambda n: setattr(n, "id", ALIASES[(ALIASES.index(n.id) + 1) % len(ALIASES)])))
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ENUMS:
        names = members.get(node.value.id, [])
        if node.attr in names and len(names) > 1:
            out.append(("enum", lambda n: setattr(n, "attr", names[(names.index(n.attr) + 1) % len(names)])))
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and isinstance(node.ctx if hasattr(node, "ctx") else ast.Load(), ast.Load):
        for i in range(len(node.elts)):
            out.append(("drop element", lambda n, i=i: n.elts.pop(i)))
    elif isinstance(node, ast.Dict) and len(node.keys) >= 2 and isinstance(parent, (ast.Assign, ast.AnnAssign)):
        for i in range(len(node.keys)):
            out.append(("drop entry", lambda n, i=i: (n.keys.pop(i), n.values.pop(i))))
    elif isinstance(node, ast.IfExp):
        out.append(("if-else", lambda n: (setattr(n, "body", n.orelse), setattr(n, "orelse", copy.deepcopy(n.body)))))
    elif isinstance(node, ast.If):
        out.append(("negate if", lambda n: setattr(n, "test", ast.UnaryOp(ast.Not(), n.test))))
    if isinstance(node, ast.Return) and node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        out.append(("return None", lambda n: setattr(n, "value", ast.Constant(None))))
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise)) or (isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await))):
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.For, ast.While, ast.With, ast.AsyncFor, ast.Try)) and not (isinstance(node, ast.AnnAssign) and node.value is None):
            out.append(("remove", "pass"))
    return out


def _scopes(tree: ast.AST) -> dict[int, str]:
    scope: dict[int, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = name
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name if name == "<module>" else f"{name}.{child.name}"
            scope[id(child)] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return scope


def _statement_spans(tree: ast.AST) -> dict[int, tuple[int, int]]:
    """For each node, the lines of the innermost statement holding it (a compound one: its header)."""
    spans: dict[int, tuple[int, int]] = {}

    def visit(node: ast.AST, span: tuple[int, int]) -> None:
        for child in ast.iter_child_nodes(node):
            s = span
            if isinstance(child, ast.stmt):
                end = child.end_lineno or child.lineno
                body = getattr(child, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                    end = max(child.lineno, body[0].lineno - 1)
                s = (child.lineno, end)
            spans[id(child)] = s
            visit(child, s)

    visit(tree, (0, 0))
    return spans


def mutants_of(file: str) -> tuple[ast.Module, list[tuple[Mutant, list[int], object]]]:
    """The file's tree and its mutants, each with the path to its node and how to change it."""
    source = (ROOT / file).read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    skip, docs, members = _skipped_nodes(tree), _docstring_nodes(tree), _enum_members()
    scopes, spans = _scopes(tree), _statement_spans(tree)
    found: list[tuple[Mutant, list[int], object]] = []

    def walk(node: ast.AST, parent: ast.AST | None, path: list[int]) -> None:
        children = list(ast.iter_child_nodes(node))
        if id(node) not in skip and hasattr(node, "lineno"):
            line = node.lineno
            text = lines[line - 1]
            wanted = "pragma: no mutate" not in text
            if file.endswith("orchestrator.py"):
                span = spans.get(id(node), (line, line))
                wanted = wanted and bool(ORCHESTRATOR_LINES.search("\n".join(lines[span[0] - 1 : span[1]])))
                wanted = wanted and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if wanted:
                for op, change in _replacements(node, parent, members, docs):
                    before = _short(node)
                    after = _short(_apply_change(copy.deepcopy(node), change))
                    if before != after:
                        m = Mutant(file, len(found), line, spans.get(id(node), (line, line)), scopes.get(id(node), "<module>"),
                                   op, before, after)  # fmt: skip
                        found.append((m, path, change))
        for i, child in enumerate(children):
            walk(child, node, [*path, i])

    walk(tree, None, [])
    seen: Counter[str] = Counter()
    for m, _, _ in found:
        base = f"{Path(m.file).name}:{m.scope}: {m.op} `{m.before}` -> `{m.after}`"
        seen[base] += 1
        m.key = base if seen[base] == 1 else f"{base} #{seen[base]}"
    return tree, found


def _apply_change(node: ast.AST, change: object) -> ast.AST:
    if change == "operand":
        return node.operand  # type: ignore[attr-defined]
    if change == "pass":
        return ast.Pass()
    change(node)  # type: ignore[operator]
    return node


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 90 else text[:87] + "..."


def mutated_tree(file: str, index: int) -> ast.Module:
    tree, found = mutants_of(file)
    _, path, change = found[index]
    parent, node = None, tree
    for i in path:
        parent, node = node, list(ast.iter_child_nodes(node))[i]
    new = _apply_change(node, change)
    if new is not node:
        assert parent is not None
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, new)
            elif isinstance(value, list) and node in value:
                value[value.index(node)] = new
    ast.copy_location(new, node)
    return ast.fix_missing_locations(tree)


# ---- inside a child process: serve a mutant, or trace which test runs which line ---------------------


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, module: str, file: str, code) -> None:  # noqa: ANN001
        self.module, self.file, self.code = module, file, code

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201
        if fullname == self.module:
            return importlib.util.spec_from_loader(fullname, self, origin=str(ROOT / self.file))
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return None

    def exec_module(self, module) -> None:  # noqa: ANN001
        module.__file__ = str(ROOT / self.file)
        exec(self.code, module.__dict__)


def child(argv: list[str]) -> int:
    import pytest

    mode, arg, rest = argv[0], argv[1], argv[2:]
    if mode == "--mutant":
        file, index = arg.rsplit(":", 1)
        code = compile(mutated_tree(file, int(index)), str(ROOT / file), "exec")
        sys.meta_path.insert(0, _MutantFinder(TARGETS[file], file, code))
        return pytest.main(rest)
    # --trace OUT: record, per test, the lines of the targets it executes, and its duration.
    files = {str(ROOT / f) for f in TARGETS}
    hits: dict[str, set[tuple[str, int]]] = defaultdict(set)
    durations: dict[str, float] = {}
    current = ["<import>"]

    def local(frame, event, _arg):  # noqa: ANN001, ANN202
        if event == "line":
            hits[current[0]].add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def tracer(frame, event, _arg):  # noqa: ANN001, ANN202
        if frame.f_code.co_filename in files:
            hits[current[0]].add((frame.f_code.co_filename, frame.f_lineno))
            return local
        return None

    class Recorder:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):  # noqa: ANN001, ANN201
            current[0] = item.nodeid
            started = time.monotonic()
            yield
            durations[item.nodeid] = time.monotonic() - started
            current[0] = "<between>"

        def pytest_runtest_logreport(self, report):  # noqa: ANN001, ANN201
            if report.failed:
                print(f"\nbaseline failure: {report.nodeid}", file=sys.stderr)

    sys.settrace(tracer)
    import threading

    threading.settrace(tracer)
    rc = pytest.main(rest, plugins=[Recorder()])
    sys.settrace(None)
    out = {"rc": int(rc), "durations": durations,
           "lines": {t: sorted([str(Path(f).relative_to(ROOT)), n] for f, n in lines) for t, lines in hits.items()}}  # fmt: skip
    Path(arg).write_text(json.dumps(out))
    return int(rc)


# ---- the run ---------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "BATCHQ_TEST_BACKENDS": "sqlite", "PYTHONDONTWRITEBYTECODE": "1"}


def _fingerprint(tests: list[str]) -> str:
    """Of the targets and of the tests of one phase (and what they import from tests/)."""
    files = [*TARGETS, "tests/conftest.py", "tests/receiver.py"]
    for t in tests:
        files += [str(p.relative_to(ROOT)) for p in sorted((ROOT / t).rglob("*.py"))] if (ROOT / t).is_dir() else [t]
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + (ROOT / f).read_bytes())
    return h.hexdigest()[:16]


def coverage_map() -> dict:
    """Which tests execute which lines, per phase (each cached until a target or its tests change)."""
    CACHE.mkdir(exist_ok=True)
    merged: dict = {"durations": {}, "lines": {}}
    for phase, tests, extra in (("unit", UNIT, ["--confcutdir", "tests/unit"]), ("behaviour", BEHAVIOUR, [])):
        path = CACHE / f"trace-{phase}-{_fingerprint(tests)}.json"
        if not path.exists():
            print(f"recording which {phase} tests run which lines (again after any change of them or the targets) ...", flush=True)
            started = time.monotonic()
            cmd = [sys.executable, __file__, "--trace", str(path), "-q", "-p", "no:cacheprovider", *extra,
                   "--basetemp", str(CACHE / "tmp-trace"), *tests]  # fmt: skip
            subprocess.run(cmd, cwd=ROOT, env=_env(), check=False, stdout=subprocess.DEVNULL)
            if json.loads(path.read_text())["rc"] != 0:
                path.unlink()
                sys.exit(f"the {phase} tests fail without any mutant: fix them first")
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
        data = json.loads(path.read_text())
        merged["durations"].update(data["durations"])
        merged["lines"].update({t: v for t, v in data["lines"].items() if not t.startswith("<")})
    return merged


def tests_for(m: Mutant, cov: dict, by_line: dict) -> tuple[list[str], list[str]]:
    """The unit and behaviour tests that execute the mutant's statement; all of them for module-level code."""
    if m.scope == "<module>" or m.scope.count(".") == 0 and m.scope[:1].isupper():
        # Run at import (tables, class bodies): every test depends on it, and it may rename
        # parametrized tests (their ids show enum values), so the files are given, not test ids.
        return list(UNIT), list(BEHAVIOUR)
    else:
        tests = set()
        for line in range(m.span[0], m.span[1] + 1):
            tests |= by_line.get((m.file, line), set())
    order = sorted(tests, key=lambda t: (cov["durations"].get(t, 0), t))
    return [t for t in order if t.startswith("tests/unit/")], [t for t in order if not t.startswith("tests/unit/")]


def run_mutant(m: Mutant, unit: list[str], behaviour: list[str], cov: dict, worker: int) -> tuple[str, str]:
    """(outcome, detail): killed by a test, killed by a timeout, survived, or not covered."""
    if not unit and not behaviour:
        return "survived", "no test executes it"
    for phase, tests, extra in (("unit", unit, ["--confcutdir", "tests/unit"]), ("behaviour", behaviour, [])):
        if not tests:
            continue
        budget = 60 + 3 * sum(d for t, d in cov["durations"].items() if any(t == s or t.startswith(s + "/") or
                                                                          t.startswith(s + "::") for s in tests))
        cmd = [sys.executable, __file__, "--mutant", f"{m.file}:{m.index}", "-x", "-q", "-p", "no:cacheprovider",
               "--timeout", "60", "--basetemp", str(CACHE / f"tmp-{worker}"), *extra, *tests]  # fmt: skip
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return "killed", f"{phase}: timed out after {budget:.0f} s"
        if done.returncode in (4, 5):  # a test id that no longer exists, or no test: a stale line map
            return "error", f"{phase}: pytest exit {done.returncode} (tests changed during the run?)"
        if done.returncode != 0:  # 1: a test failed; 2, 3: the mutant broke collection or pytest itself
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
            return "killed", f"{phase}: {failed[0] if failed else f'exit {done.returncode}'}"
    return "survived", f"{len(unit)} unit + {len(behaviour)} behaviour tests pass"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--mutant", "--trace"):
        return child(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=int, help="run a random sample of this many mutants")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--file", action="append", help="only this target (e.g. rules.py); repeatable")
    p.add_argument("--match", help="only mutants whose key contains this text")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    p.add_argument("--show", help="print the mutated code of the mutant with this key and stop")
    p.add_argument("--json", help="also write every outcome to this file")
    args = p.parse_args()

    mutants = [m for f in TARGETS for m, _, _ in mutants_of(f)[1]]
    if args.file:
        mutants = [m for m in mutants if any(m.file.endswith(f) for f in args.file)]
    if args.match:
        mutants = [m for m in mutants if args.match in m.key]
    stale = set(EQUIVALENT) - {m.key for f in TARGETS for m, _, _ in mutants_of(f)[1]}
    if stale:
        print(f"warning: {len(stale)} EQUIVALENT keys match no mutant now:", *sorted(stale), sep="\n  ")
    if args.show:
        (m,) = [m for m in mutants if m.key == args.show]
        original = (ROOT / m.file).read_text().splitlines()
        print(f"{m.file}:{m.line}  ({m.op})\n- {original[m.line - 1].strip()}\n+ {m.after}   (was {m.before})")
        return 0
    if args.list:
        for m in mutants:
            print(f"{m.file}:{m.line}  {m.key}{'   [equivalent]' if m.key in EQUIVALENT else ''}")
        print(f"{len(mutants)} mutants", Counter(m.file for m in mutants))
        return 0
    candidates = [m for m in mutants if m.key not in EQUIVALENT]
    equivalent = len(mutants) - len(candidates)
    if args.sample and args.sample < len(candidates):
        candidates = sorted(random.Random(args.seed).sample(candidates, args.sample), key=lambda m: (m.file, m.index))
    cov = coverage_map()
    by_line: dict[tuple[str, int], set[str]] = defaultdict(set)
    for test, lines in cov["lines"].items():
        for f, n in lines:
            by_line[(f, n)].add(test)

    print(f"{len(candidates)} mutants to run ({equivalent} equivalent left out), {args.jobs} at a time", flush=True)
    results: list[tuple[Mutant, str, str]] = []
    started = time.monotonic()

    def one(item: tuple[int, Mutant]) -> tuple[Mutant, str, str]:
        i, m = item
        unit, behaviour = tests_for(m, cov, by_line)
        outcome, detail = run_mutant(m, unit, behaviour, cov, i % args.jobs)
        return m, outcome, detail

    with ThreadPoolExecutor(args.jobs) as pool:
        for n, (m, outcome, detail) in enumerate(pool.map(one, enumerate(candidates)), 1):
            results.append((m, outcome, detail))
            mark = {"killed": ".", "survived": "S"}.get(outcome, "E")
            print(f"[{n}/{len(candidates)} {time.monotonic() - started:5.0f}s] {mark} {m.key}  ({detail})", flush=True)

    errors = [r for r in results if r[1] == "error"]
    results = [r for r in results if r[1] != "error"]
    print("\nkill rate (equivalent mutants left out):")
    for f in [*TARGETS, "all"]:
        mine = [r for r in results if f in ("all", r[0].file)]
        if mine:
            killed = sum(1 for r in mine if r[1] == "killed")
            print(f"  {f:32} {killed:4}/{len(mine):<4} {100 * killed / len(mine):5.1f} %")
    survivors = [r for r in results if r[1] != "killed"]
    if survivors:
        print(f"\n{len(survivors)} survivors:")
        for m, _, detail in survivors:
            print(f"  {m.file}:{m.line}  {m.key}  ({detail})")
    if errors:
        print(f"\n{len(errors)} mutants not judged (run them again):", *(f"  {m.key}" for m, _, _ in errors), sep="\n")
    if args.json:
        Path(args.json).write_text(json.dumps([{"key": m.key, "file": m.file, "line": m.line, "outcome": o, "detail": d}
                                               for m, o, d in results], indent=1))  # fmt: skip
    print(f"\n{len(results)} mutants in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
