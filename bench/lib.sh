# Shared by the bench scripts: `best CMD…` prints the best of 5 wall-clock seconds of CMD.
best() {
  local best=999
  for _ in 1 2 3 4 5; do
    local s e
    s=$(date +%s.%N); "$@"; e=$(date +%s.%N)
    best=$(echo "$e - $s" | bc -l | awk -v b="$best" '{print ($1 < b) ? $1 : b}')
  done
  echo "$best"
}
