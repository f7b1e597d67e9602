# A repository left in the project directory (as by an earlier job with
# GIT_STRATEGY=fetch) with an untracked file: GIT_CLEAN_FLAGS decides
# whether the file survives the checkout.
if [ ! -d "$CI_PROJECT_DIR/.git" ]; then
  mkdir -p "$CI_PROJECT_DIR/.git/objects" "$CI_PROJECT_DIR/.git/refs/heads"
  echo 'ref: refs/heads/main' > "$CI_PROJECT_DIR/.git/HEAD"
  printf '[core]\n\trepositoryformatversion = 0\n\tbare = false\n[remote "origin"]\n\turl = https://example.invalid/x.git\n' > "$CI_PROJECT_DIR/.git/config"
fi
echo left-over > "$CI_PROJECT_DIR/untracked.txt"
