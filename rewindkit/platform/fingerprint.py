"""A fingerprint of a user's plug-in that cannot miss (issue 20): the code of its functions and
classes and of those of the user's own they use, and the values they read — module globals, closure
cells, default arguments, attributes of the user's own modules, bound objects — recursively; numbers,
strings, containers, dataclasses, arrays and tensors by content. What cannot be hashed is refused
with its name (:class:`FingerprintError`), never guessed."""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import inspect
import sys
import sysconfig
import types
from collections.abc import Callable

class FingerprintError(ValueError):
    """A value a plug-in reads that cannot be fingerprinted (so a changed value could reuse old runs)."""


_LIBRARY_PATHS = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)


def _is_users_module(module) -> bool:
    name = getattr(module, "__name__", "") or ""
    if name.split(".")[0] in ("rewindkit", "builtins", "torch"):
        return False
    path = getattr(module, "__file__", None) or ""
    return not (path.startswith(_LIBRARY_PATHS) or "site-packages" in path or "dist-packages" in path)


def _is_users(obj) -> bool:
    """A function or class of the user's own (not torch's, the kit's, a library's or Python's)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    module_name = getattr(obj, "__module__", None) or ""
    if module_name.split(".")[0] in ("rewindkit", "builtins", "torch"):
        return False
    module = sys.modules.get(module_name)
    return module is None or _is_users_module(module)


def _code_text(obj) -> str:
    """The source of a class, or of a function's own code: a decorator's wrapper is its own text, not
    the text of the function it wraps (``inspect.getsource`` follows ``__wrapped__``; its code object
    does not)."""
    try:
        return inspect.getsource(obj if inspect.isclass(obj) else obj.__code__)
    except (OSError, TypeError):  # defined in an exec'd string, a REPL: its bytecode and constants
        code = getattr(obj, "__code__", None)
        if code is not None:
            return repr((code.co_code, code.co_consts, code.co_names))
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _global_reads(code: types.CodeType) -> tuple[set[str], set[tuple[str, ...]]]:
    """The global names ``code`` (and the code nested in it: lambdas, comprehensions) loads, and the
    attribute chains it reads from them (``config.HIDDEN``, ``pkg.cfg.sizes.WIDTH``)."""
    names, chains = set(), set()
    todo = [code]
    while todo:
        c = todo.pop()
        chain: list[str] = []
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                if len(chain) > 1:
                    chains.add(tuple(chain))
                names.add(ins.argval)
                chain = [ins.argval]
                continue
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
                chain.append(ins.argval)
                continue
            if len(chain) > 1:
                chains.add(tuple(chain))
            chain = []
        if len(chain) > 1:
            chains.add(tuple(chain))
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names, chains


class _Fingerprint:
    """Feeds code and values into one hash; refuses what it cannot hash (never guesses)."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.seen: set[int] = set()

    def feed(self, text: str) -> None:
        self.digest.update(text.encode())
        self.digest.update(b"\0")

    def code(self, obj, where: str) -> None:
        """A function or class of the user's own: its text and everything it reads."""
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.feed(_code_text(obj))
        if inspect.isclass(obj):
            for base in obj.__bases__:
                if _is_users(base):
                    self.code(base, f"{where} (base class)")
            for key, value in vars(obj).items():
                if key in ("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__annotations__",
                           "__firstlineno__", "__static_attributes__"):
                    continue
                self.value(value, f"{obj.__qualname__}.{key}" + ("" if where == obj.__qualname__ else f" (from {where})"))
            return
        qual = getattr(obj, "__qualname__", repr(obj))
        self.value(obj.__defaults__ or (), f"the default arguments of {qual}")
        self.value(obj.__kwdefaults__ or {}, f"the default arguments of {qual}")
        if getattr(obj, "__wrapped__", None) is not None:  # functools.wraps: the wrapped function too
            self.value(obj.__wrapped__, f"the function {qual} wraps", 1)
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later in the enclosing function)
                continue
            self.value(content, f"closure variable {name!r} of {qual}")
        names, chains = _global_reads(code)
        scope = obj.__globals__
        for name in sorted(names):
            if name in scope:
                self.feed(f"global {name}")
                self.value(scope[name], f"global {name!r} read by {qual}")
        for chain in sorted(chains):  # through the user's own modules to the first value that is not one
            current = scope.get(chain[0])
            for depth, attr in enumerate(chain[1:], start=2):
                if not (inspect.ismodule(current) and _is_users_module(current) and hasattr(current, attr)):
                    break
                current = getattr(current, attr)
                if not inspect.ismodule(current):
                    path = ".".join(chain[:depth])
                    self.feed(f"attribute {path}")
                    self.value(current, f"{path}, read by {qual}")
                    break

    def value(self, v, where: str, depth: int = 0) -> None:
        if depth > 50:
            raise FingerprintError(f"cannot fingerprint {where}: nested more than 50 levels deep")
        if isinstance(v, _SIMPLE):
            self.feed(f"{type(v).__name__}:{v!r}")
        elif isinstance(v, (enum.Enum,)):
            self.feed(f"enum:{type(v).__module__}.{type(v).__qualname__}.{v.name}")
        elif isinstance(v, (tuple, list)):
            self.feed(f"{type(v).__name__}[{len(v)}]")
            for i, item in enumerate(v):
                self.value(item, f"{where}[{i}]", depth + 1)
        elif isinstance(v, dict):
            self.feed(f"dict[{len(v)}]")
            for key in sorted(v, key=repr):
                self.value(key, f"{where} (a key)", depth + 1)
                self.value(v[key], f"{where}[{key!r}]", depth + 1)
        elif isinstance(v, (set, frozenset)):
            self.feed(f"set[{len(v)}]")
            for item in sorted(v, key=repr):
                self.value(item, f"{where} (an element)", depth + 1)
        elif _is_users(v):
            self.code(v, where)
        elif isinstance(v, types.MethodType):  # a bound method: its function and the object it is bound to
            self.feed("method")
            self.value(v.__func__, where, depth + 1)
            self.value(v.__self__, f"the object {where} is bound to", depth + 1)
        elif (_is_users(type(v)) and not isinstance(v, type)
              and type(v).__module__ not in sys.builtin_module_names):  # an instance of a class of the user's own
            # (an object of a module compiled into Python, an open file (_io) among them, is not: refused below)
            self.feed(f"instance:{type(v).__qualname__}")
            self.code(type(v), where)
            state = vars(v) if hasattr(v, "__dict__") else {
                k: getattr(v, k) for k in getattr(type(v), "__slots__", ()) if hasattr(v, k)}
            self.value(state, f"{where} (its attributes)", depth + 1)
        elif isinstance(v, (staticmethod, classmethod)):
            self.value(v.__func__, where, depth + 1)
        elif isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                if f is not None:
                    self.value(f, where, depth + 1)
        elif isinstance(v, functools.partial):
            self.feed("partial")
            self.value(v.func, where, depth + 1)
            self.value(v.args, f"{where} (partial arguments)", depth + 1)
            self.value(v.keywords, f"{where} (partial keywords)", depth + 1)
        elif inspect.ismodule(v):
            self.feed(f"module:{v.__name__}")  # what the code reads from it is fed where it reads it
        elif inspect.isfunction(v) or inspect.isclass(v) or inspect.isbuiltin(v) or inspect.ismethoddescriptor(v) \
                or isinstance(v, (types.MethodType, types.BuiltinMethodType)):
            # a library's or the kit's function or class: identified by its name (its version is the library's)
            self.feed(f"library:{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(v))}")
        elif _is_array(v):
            self._array(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            self.feed(f"dataclass:{type(v).__module__}.{type(v).__qualname__}")
            if _is_users(type(v)):
                self.code(type(v), where)
            for f in dataclasses.fields(v):
                self.value(getattr(v, f.name), f"{where}.{f.name}", depth + 1)
        elif type(v).__module__ == "torch" and type(v).__name__ in ("dtype", "device", "Size", "memory_format"):
            self.feed(f"torch:{v!r}")
        elif type(v).__module__ == "numpy" and hasattr(v, "dtype") and not hasattr(v, "shape"):
            self.feed(f"numpy:{v!r}")
        elif isinstance(v, (range, slice)):
            self.feed(repr(v))
        else:
            raise FingerprintError(
                f"cannot fingerprint {where}: a {type(v).__module__}.{type(v).__qualname__} "
                f"({_short_repr(v)}), so a change to it could not be told from an unchanged plug-in and an old "
                f"run could be reused. Pass the value through model_options / dataset_options (part of every run "
                f"id), or register the plug-in with version='...' and change the version whenever the value changes.")

    def _array(self, v) -> None:
        import numpy as np
        if isinstance(v, np.ndarray):
            self.feed(f"ndarray:{v.dtype}:{v.shape}")
            self.digest.update(np.ascontiguousarray(v).tobytes())
            return
        t = v.detach().cpu().contiguous()  # a torch tensor
        self.feed(f"tensor:{t.dtype}:{tuple(t.shape)}")
        self.digest.update(t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())

    def hexdigest(self) -> str:
        return self.digest.hexdigest()[:12]


def _is_array(v) -> bool:
    module = type(v).__module__
    return (module == "numpy" and type(v).__name__ == "ndarray") or (
        module.startswith("torch") and type(v).__name__ in ("Tensor", "Parameter"))


def _short_repr(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def fingerprint(*functions: Callable | None) -> str:
    """A short hash of the functions' code, of every function and class of the user's own they use,
    and of the values all of these read (module globals, closure cells, default arguments,
    attributes of the user's own modules), recursively; raises :class:`FingerprintError` naming a
    value it cannot hash."""
    fp = _Fingerprint()
    for fn in functions:
        if fn is None:
            continue
        if _is_users(fn):
            fp.code(fn, getattr(fn, "__qualname__", repr(fn)))
        else:
            fp.value(fn, repr(fn))
    return fp.hexdigest()


