"""Screenshots of the Scipion layer under Xvfb: protocol form, viewer form, histogram, gallery.

    python docs/screenshots/make_screenshots.py            # writes docs/screenshots/*.png

Needs xvfb-run and ImageMagick (apt-get install xvfb imagemagick). Builds a throw-away Scipion
project in a temporary folder from the bundled example job (or a simulated one), scores it with
the bundled model (an untrained test model if none is bundled yet), then opens each window in its
own Xvfb display and captures it. Nothing is written outside the temporary folder but the PNGs.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))
import scipion_env  # noqa: E402  (before pyworkflow)

SHOTS = {"form": "auto_select_form.png", "viewer": "viewer_form.png",
         "histogram": "viewer_histogram.png", "gallery": "viewer_gallery.png"}
CLOSE_AFTER_MS = 20000


def _project(base):
    scipion_env.configure(base)
    import pyworkflow as pw
    from pyworkflow.project import Manager

    domain = pw.Config.getDomain()
    domain.getPlugins()
    manager = Manager()
    project = manager.loadProject("Shots") if manager.hasProject("Shots") else manager.createProject("Shots")
    os.chdir(project.getPath())
    return domain, project


def prepare(base):
    """Import the example job and run auto-select once (the viewer needs a finished run)."""
    domain, project = _project(base)
    from classranker_plugin.io import read_classes

    job = REPO / "classranker_plugin" / "example" / "run_it025_model.star"
    if not job.exists():
        from classranker_plugin.simulation import simulate_job

        job = simulate_job(Path(base) / "relion" / "Class2D" / "job008", n_classes=24, box=64,
                           n_particles=2000, write_particle_images=True, seed=2) / "run_it025_model.star"
    protocols = domain.getProtocols()
    imp = project.newProtocol(protocols["ProtClassRankerImportClasses2D"], starFile=str(job),
                              objLabel="import RELION 2D classes")
    project.launchProtocol(imp, wait=True)
    model = {}
    bundled = REPO / "classranker_plugin" / "models" / "starter.pt"
    if not bundled.exists() and not os.environ.get("CLASSRANKER_MODEL"):
        path = scipion_env.write_untrained_checkpoint(Path(base) / "untrained.pt", read_classes(job))
        model = {"modelSource": 1, "checkpointFile": path}
    sel = project.newProtocol(protocols["ProtClassRankerAutoSelect2D"], useGpu=False,
                              objLabel="ClassRanker auto-select", writeRejected=True, **model)
    sel.inputClasses.set(imp)
    sel.inputClasses.setExtended("outputClasses")
    project.launchProtocol(sel, wait=True)
    print(imp.getStatus(), sel.getStatus(), sel.summary())


def _runs(project, name):
    return [r for r in project.getRuns() if r.getClassName() == name]


def show(base, what):
    domain, project = _project(base)
    domain.getViewers()  # sets the plugin of each viewer (its window title)
    import pyworkflow.gui.project  # noqa: F401  (before pyworkflow.gui.form: circular import)
    from pyworkflow.gui.form import FormWindow

    original_show = FormWindow.show

    def show_then_close(window, *args, **kwargs):  # every form closes itself after the capture
        window.root.after(CLOSE_AFTER_MS, os._exit, 0)  # destroy() leaves pyworkflow threads alive
        return original_show(window, *args, **kwargs)

    FormWindow.show = show_then_close
    imp = _runs(project, "ProtClassRankerImportClasses2D")[0]
    sel = _runs(project, "ProtClassRankerAutoSelect2D")[0]
    if what == "form":
        prot = project.newProtocol(domain.getProtocols()["ProtClassRankerAutoSelect2D"])
        prot.inputClasses.set(imp)
        prot.inputClasses.setExtended("outputClasses")
        FormWindow("Protocol Run: " + prot.getClassLabel(), prot, lambda *a: None, master=None).show()
        return
    from classranker_plugin.viewers.viewer_auto_select import ClassRankerViewer

    viewer = ClassRankerViewer(project=project, protocol=sel)
    if what == "viewer":
        viewer.visualize(sel)
        return
    import matplotlib.pyplot as plt
    from pyworkflow.gui.plotter import Plotter

    Plotter.setBackend("TkAgg")
    viewer.setProtocol(sel)
    (plotter,) = viewer._showHistogram() if what == "histogram" else viewer._showGallery()
    timer = plotter.figure.canvas.new_timer(interval=CLOSE_AFTER_MS)
    timer.add_callback(os._exit, 0)
    timer.start()
    plt.show()


def capture(base, what, out):
    script = (f"{sys.executable} {__file__} --show {what} {base} & sleep 14; "
              f"import -window root {out}; wait")
    subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24", "sh", "-c", script], check=True)
    subprocess.run(["convert", str(out), "-trim", "+repage", str(out)], check=True)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--show":
        show(sys.argv[3], sys.argv[2])
        return
    with tempfile.TemporaryDirectory(prefix="classranker_shots_") as base:
        subprocess.run([sys.executable, __file__, "--prepare", base], check=True)
        for what, name in SHOTS.items():
            capture(base, what, HERE / name)
            print("wrote", HERE / name)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--prepare":
        prepare(sys.argv[2])
    else:
        main()
