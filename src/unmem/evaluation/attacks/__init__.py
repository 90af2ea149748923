"""The robustness audit's attacks, one file each (``base`` holds the registry); importing this
package registers every one of them."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
