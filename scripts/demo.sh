#!/usr/bin/env bash
# The README's main job on the embedded default: generated task2 data → local sweep (Optuna TPE
# + ASHA) → export to a local SQLite MLflow store → retrain the best → submission.csv → score.
set -euo pipefail
OUT=${POKETUNE_DEMO_DIR:-outputs/demo}
NAME=${POKETUNE_DEMO_NAME:-demo-task2-$(date +%Y%m%d-%H%M%S)}
MLFLOW_URI="sqlite:///$(pwd)/mlflow.db"
mkdir -p "$OUT"
start=$(date +%s)

poketune make-data --kind task2 --out "$OUT/data" --scale 0.25 --seed 0
poketune tune search_spaces/task2_cnn.yaml --data "$OUT/data" --samples 8 --name "$NAME" \
    --cpus-per-trial 1 --set data.image_size=32 --mlflow-uri "$MLFLOW_URI"
poketune results "$NAME" --top 5
poketune retrain "$NAME" --mlflow-uri "$MLFLOW_URI"
poketune submit --model "models:/poketune-task2/latest" --mlflow-uri "$MLFLOW_URI" \
    --data "$OUT/data" --out "$OUT/submission.csv"
poketune score "$OUT/submission.csv" --answers "$OUT/data/test_labels.csv"

echo
echo "submission: $OUT/submission.csv  ($(( $(date +%s) - start ))s)"
echo "MLflow UI:  mlflow ui --backend-store-uri $MLFLOW_URI  (then open http://127.0.0.1:5000)"
