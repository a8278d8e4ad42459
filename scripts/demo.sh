#!/usr/bin/env bash
# The main job on the embedded scene, run the way a user runs it: through qgis_process.
#   generate scene -> Pretrain DDPM -> Train BDGF -> Classify raster -> Assess accuracy,
#   plus the random-forest baseline under the honest (polygons) and the paper's (pixels) split.
# Usage: scripts/demo.sh OUT_DIR [SIZE] [BANDS]   (make demo calls it; the scene is reused if present)
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
OUT="${1:-demo_out}"; SIZE="${2:-200}"; BANDS="${3:-60}"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
QP="$REPO/scripts/qgis_process.sh"
PY="$REPO/.venv/bin/python"
: "${DEMO_STEPS:=300}" "${DEMO_EPOCHS:=30}" "${DEMO_SEED:=0}"

run() {  # run ALG -- PARAMS... ; prints the algorithm's results as JSON on stdout
  local alg="$1"; shift
  local log="$OUT/${alg#bdgf:}.log"
  echo ">> qgis_process run $alg $*" >&2
  if ! "$QP" run "$alg" --json -- "$@" > "$log.json" 2> "$log"; then
    echo "demo: $alg failed; see $log" >&2; tail -5 "$log" >&2; exit 1
  fi
  cat "$log.json"
}
get() { "$PY" -c 'import json,sys; print(json.load(sys.stdin)["results"][sys.argv[1]])' "$1"; }
# whole_map NAME MAP MODEL: OA over every pixel of the scene's reference map (less the model's training pixels),
# and apart on boundary pixels (within 2 px of another class) and interior pixels
whole_map() {
  run bdgf:assess MAP="$2" LABEL_RASTER="$R" MODEL="$3" REPORT="$OUT/${1}_wholemap.html" \
      JSON="$OUT/${1}_wholemap.json" > /dev/null
  "$PY" - "$OUT/${1}_wholemap.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
b = j["boundaries"]
print("OA %.2f%% over %d pixels; boundary pixels %.2f%%, interior pixels %.2f%%"
      % (j["oa"], j["n"], b["boundary"]["oa"], b["interior"]["oa"]))
EOF
}

if [ ! -f "$OUT/scene/groundtruth.gpkg" ]; then
  run bdgf:generate_scene OUTPUT_FOLDER="$OUT/scene" SIZE="$SIZE" BANDS="$BANDS" SEED=0 > /dev/null
else
  echo ">> reusing the scene in $OUT/scene" >&2
fi
S="$OUT/scene/spectral.tif"; A="$OUT/scene/sar.tif"; G="$OUT/scene/groundtruth.gpkg"; R="$OUT/scene/reference.tif"
if [ ! -f "$R" ]; then  # a scene from before the reference map: write it (same seed and size, same truth)
  "$PY" -m bdgf_core generate-scene --out-dir "$OUT/scene.new" --size "$SIZE" --bands "$BANDS" --seed 0 --progress none >/dev/null
  mv "$OUT/scene.new/reference.tif" "$R"; rm -rf "$OUT/scene.new"
fi

# QGIS 3.22's qgis_process takes enum parameters by index: SPLIT 0 = polygons, 2 = pixels; PROFILE 1 = fast.
split_index() { case "$1" in polygons) echo 0;; blocks) echo 1;; pixels) echo 2;; esac; }
summary=(); whole=()
for split in polygons pixels; do
  run bdgf:train_baseline SPECTRAL="$S" SAR="$A" GROUND_TRUTH="$G" CLASS_FIELD=class SAMPLES_PER_CLASS=50 \
      SPLIT="$(split_index "$split")" SEED="$DEMO_SEED" MODEL="$OUT/baseline_$split.bdgf" REPORT="$OUT/baseline_$split.html" > /dev/null
  run bdgf:classify MODEL="$OUT/baseline_$split.bdgf" SPECTRAL="$S" SAR="$A" OUTPUT="$OUT/baseline_${split}_map.tif" > /dev/null
  r=$(run bdgf:assess MAP="$OUT/baseline_${split}_map.tif" GROUND_TRUTH="$G" CLASS_FIELD=class \
      MODEL="$OUT/baseline_$split.bdgf" REPORT="$OUT/baseline_${split}_accuracy.html")
  summary+=("random forest, $split split: OA $(get OA <<<"$r")%  AA $(get AA <<<"$r")%  Kappa $(get KAPPA <<<"$r")%")
  whole+=("random forest, $split split: $(whole_map "baseline_$split" "$OUT/baseline_${split}_map.tif" "$OUT/baseline_$split.bdgf")")
done

if "$QP" help bdgf:train >/dev/null 2>&1; then
  run bdgf:pretrain SPECTRAL="$S" SAR="$A" STEPS="$DEMO_STEPS" PROFILE=1 SEED="$DEMO_SEED" \
      MODEL="$OUT/diffusion.bdgf" FEATURES="$OUT/diffusion_features.tif" > /dev/null
  run bdgf:train SPECTRAL="$S" SAR="$A" FEATURES="$OUT/diffusion_features.tif" GROUND_TRUTH="$G" CLASS_FIELD=class \
      SAMPLES_PER_CLASS=50 SPLIT=0 EPOCHS="$DEMO_EPOCHS" SEED="$DEMO_SEED" MODEL="$OUT/bdgf.bdgf" \
      REPORT="$OUT/bdgf_training.html" > /dev/null
  run bdgf:classify MODEL="$OUT/bdgf.bdgf" SPECTRAL="$S" SAR="$A" FEATURES="$OUT/diffusion_features.tif" \
      OUTPUT="$OUT/bdgf_map.tif" CONFIDENCE="$OUT/bdgf_confidence.tif" ENTROPY="$OUT/bdgf_entropy.tif" > /dev/null
  r=$(run bdgf:assess MAP="$OUT/bdgf_map.tif" GROUND_TRUTH="$G" CLASS_FIELD=class MODEL="$OUT/bdgf.bdgf" \
      REPORT="$OUT/bdgf_accuracy.html")
  summary+=("BDGF, polygons split:          OA $(get OA <<<"$r")%  AA $(get AA <<<"$r")%  Kappa $(get KAPPA <<<"$r")%")
  whole+=("BDGF, polygons split:          $(whole_map bdgf "$OUT/bdgf_map.tif" "$OUT/bdgf.bdgf")")
  MAP="$OUT/bdgf_map.tif"
else
  MAP="$OUT/baseline_polygons_map.tif"
fi

echo
echo "Results on the embedded scene (${SIZE}x${SIZE}, $BANDS bands), tested on held-out pixels:"
printf '  %s\n' "${summary[@]}"
echo "  (the pixels split is the paper's protocol: its test pixels neighbour training pixels, so it flatters)"
echo "The whole map against the scene's reference map (every pixel's true class; the held-out polygons stop"
echo "short of class borders, the map does not):"
printf '  %s\n' "${whole[@]}"
echo "Classification map: $MAP"
echo "Reports: $OUT/*.html"
