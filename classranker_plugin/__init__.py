"""ClassRanker: score 2D class averages from 0 (junk) to 1 (good) and auto-select the good ones.

The core (io, features, model, scoring, simulation, cli) imports no Scipion. The Scipion layer
(the ``Plugin`` class, protocols, viewers, wizards) is loaded only when pyworkflow is already
imported, which is how Scipion discovers plugins.
"""
import os
import sys

__version__ = "0.1.0"

# In a source checkout, protocols/ and training/ sit beside this folder; setup.py installs them as
# classranker_plugin.protocols and classranker_plugin.training. Extending __path__ makes the checkout
# import exactly as the installed package does.
_here = os.path.dirname(os.path.abspath(__file__))
_checkout = os.path.dirname(_here)
if (os.path.isfile(os.path.join(_checkout, "training", "__init__.py"))
        and not os.path.isdir(os.path.join(_here, "training"))):
    __path__.append(_checkout)  # noqa: F821  (package __path__)

if "pyworkflow" in sys.modules:  # Scipion is discovering plugins: expose the Plugin class
    from .plugin import Plugin  # noqa: F401


def __getattr__(name):
    """``classranker_plugin.Plugin`` also works when the core was imported before pyworkflow."""
    if name == "Plugin":
        from .plugin import Plugin as plugin_class
        globals()["Plugin"] = plugin_class
        return plugin_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
