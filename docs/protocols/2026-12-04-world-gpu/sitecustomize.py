"""The lent GPU machine has no GDAL: `training fit` on image/mask folders never calls rasterio, but its import chain
(tiled validation through core.extraction) names it. This stands in for the import only; any use of it fails."""
import importlib.abc
import importlib.machinery
import os
import sys
import types

ABSENT = ("rasterio", "pyogrio", "affine")


class _Absent(types.ModuleType):
    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return type(key, (), {"__init__": lambda *a, **k: (_ for _ in ()).throw(RuntimeError(f"{key}: no GDAL here"))})


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return _Absent(spec.name)

    def exec_module(self, module):
        module.__path__ = []


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in ABSENT and (os.environ.get("STUB_GDAL_ANYWAY")
                              or importlib.machinery.PathFinder.find_spec(top) is None):
            return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)
        return None


sys.meta_path.insert(0, _Finder())
