"""Method adapters. Importing this package registers every adapter (see `methods.registry`)."""

from methods import vit  # noqa: F401  (registers; the baseline first in `--methods all`)
from methods import ffvt, transfg  # noqa: F401, I001
from methods import mixvit, mixvit_parts  # noqa: F401, I001
from methods import sovit, sovit_arch  # noqa: F401, I001
from methods import ramstrans  # noqa: F401, I001
from methods.base import MethodAdapter, method_output
from methods.registry import get_method, method_names, parse_method_spec, register_method

__all__ = ["MethodAdapter", "method_output", "get_method", "method_names", "parse_method_spec", "register_method"]
