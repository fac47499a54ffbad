"""Write data/real/<id>/labels.csv and provenance.json for a Class2D run made here (written for this project).
usage: python save_labels.py spec.json   where spec has: dataset, n, good[], uncertain[], notes{class: text}, prov{...}"""
import csv, json, sys
from pathlib import Path
spec = json.load(open(sys.argv[1]))
ds, n = spec['dataset'], spec['n']
good, unc = set(spec['good']), set(spec['uncertain'])
notes = {int(k): v for k, v in spec.get('notes', {}).items()}
out = Path('/work/main/data/real') / ds; out.mkdir(parents=True, exist_ok=True)
rows, ng, nj, nu = [], 0, 0, 0
for k in range(1, n + 1):
    if k in good: lab, ng = 1, ng + 1
    elif k in unc: lab, nu = '', nu + 1
    else: lab, nj = 0, nj + 1
    rows.append([k, lab, '', notes.get(k, '')])
with open(out / 'labels.csv', 'w', newline='') as f:
    w = csv.writer(f); w.writerow(['class_number', 'label', 'author_label', 'note']); w.writerows(rows)
prov = dict(dataset=ds); prov.update(spec['prov'])
prov.update(n_classes=n, n_good=ng, n_junk=nj, n_uncertain=nu, author_selection=None, agreement_with_authors=None)
json.dump(prov, open(out / 'provenance.json', 'w'), indent=1)
print(ds, 'good', ng, 'junk', nj, 'uncertain', nu)
