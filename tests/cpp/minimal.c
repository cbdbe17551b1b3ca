/* The README's minimal C example: load a model, print the top-10 for a history. */
#include <stdio.h>

#include "seqrec.h"

int main(int argc, char **argv) {
  seqrec_model *model = NULL;
  const uint32_t history[] = {12, 7, 99}; /* item ids, oldest first */
  uint32_t items[10];
  float scores[10];
  int i;

  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.safetensors\n", argv[0]);
    return 2;
  }
  if (seqrec_model_load(argv[1], &model) != SEQREC_OK) {
    fprintf(stderr, "load: %s\n", seqrec_last_error());
    return 1;
  }
  /* k = 10, exclude_history = 1: never recommend 12, 7 or 99 again. */
  if (seqrec_model_topk(model, history, 3, 10, 1, items, scores) != SEQREC_OK) {
    fprintf(stderr, "topk: %s\n", seqrec_last_error());
    seqrec_model_free(model);
    return 1;
  }
  for (i = 0; i < 10; ++i) printf("%u %.4f\n", items[i], scores[i]);
  seqrec_model_free(model);
  return 0;
}
