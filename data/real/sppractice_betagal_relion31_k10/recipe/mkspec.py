import json, sys
run, K, it, good, unc, notes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5]), json.loads(sys.argv[6])
c = json.load(open('prov_common.json'))
cmd = open(f'{run}/command.txt').read().strip().replace('\n', '; ')
c.update({"software": f"RELION 3.1.3 (Debian CPU build) relion_refine Class2D K={K}, {it} iterations (run here)",
 "files": {"classes": f"scratch/real_runs/sppractice/{run}/run_it{it:03d}_classes.mrcs", "model_star": f"scratch/real_runs/sppractice/{run}/run_it{it:03d}_model.star",
           "data_star": f"scratch/real_runs/sppractice/{run}/run_it{it:03d}_data.star",
           "particles": "Extract/job009/Movies/20170629_000{21..30}_frameImage.mrcs (10 float16 stacks) + Extract/job009/particles.star",
           "other": ["Extract/job009/note.txt (extraction: LoG-picked AutoPick/job008, box 256 -> 64, --invert_contrast, --norm)", "Class2D/job010 (the user's own K=50 run; labelled separately as sppractice_betagal_class2d_job010)"]},
 "notes": "Particles: 2374 LoG-autopicked (AutoPick/job008) beta-gal particles from 10 tutorial micrographs, extracted by the repo owner with RELION 5 (float16, 3.54 A/px). Converted here to one float32 stack + RELION-3.1 STAR (scratch/real_runs/tools/prep_stack.py; same pixels, CTF from the repo's particles.star). Run: " + cmd + ". LoG picks include many false picks (hole/carbon edges, contamination, empty ice), so junk classes are genuine. Same particles as the other sppractice_betagal_relion31_k* runs (not independent datasets for a leave-one-out split). Only labels + provenance are committed; no image data (no licence)."})
spec = {"dataset": f"sppractice_betagal_relion31_{run}", "n": K, "good": good, "uncertain": unc, "notes": notes, "prov": c}
json.dump(spec, open(f'spec_{run}.json', 'w'), indent=1)
