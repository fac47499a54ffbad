#!/bin/bash
# usage: run_class2d.sh <workdir> <star> <outname> <K> <iter> <diameter> <extra args...>
set -e
OFFR=${OFFR:-5}; OFFS=${OFFS:-2}
cd "$1"; star=$2; out=$3; K=$4; it=$5; diam=$6; shift 6
mkdir -p $out
cmd="relion_refine --i $star --o $out/run --K $K --iter $it --tau2_fudge ${TAU:-2} --particle_diameter $diam --zero_mask --flatten_solvent --norm --scale --oversampling 1 --psi_step 12 --offset_range $OFFR --offset_step $OFFS --j 1 --dont_combine_weights_via_disc --pool 30 --random_seed 0 $*"
echo "$cmd" > $out/command.txt
start=$(date +%s)
nice -n 10 $cmd > $out/run.out 2> $out/run.err
echo "elapsed $(( $(date +%s) - start )) s" >> $out/command.txt
