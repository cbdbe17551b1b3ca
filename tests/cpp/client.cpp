// C++17 client of the seqrec C ABI (include/seqrec.h), built and run by
// ffi/tests/c_client.rs against the freshly built libseqrec (shared and static, and under
// AddressSanitizer + UndefinedBehaviorSanitizer when SEQREC_SANITIZE is set).
//
//   client check   MODEL EXPECTED   load, info, score, top-k, batch, sessions, 8 threads,
//                                   compared with what the Rust API wrote to EXPECTED
//   client errors  MODEL CASER      every error path, with statuses, messages and untouched
//                                   out-parameters
//   client mutants FILE...          corrupt files load or fail cleanly; loaded ones score
//   client knobs   MODEL EXPECTED   a multi-objective model's knobs: listed, set on a session
//                                   (the ranking follows EXPECTED and changes), refused when
//                                   bad (session untouched), session boundaries
//   client pdit    MODEL CATALOG BAD_CATALOG EXPECTED
//                                   a PDiT: sizes, generated latents and top-k equal to what
//                                   the Rust API wrote to EXPECTED (4 threads on one handle),
//                                   every error path with untouched outputs
//   client ranking MODEL EXPECTED   candidate re-ranking and one-shot requests with options
//                                   (knobs, exclusions, user) as EXPECTED says, and their errors
//   client move    MODEL OTHER      sessions saved and restored (into a second load of MODEL)
//                                   at every step continue identically; corrupt, truncated and
//                                   foreign state is refused
//   client text    DIR EXPECTED     the text encoder's embeddings as EXPECTED says, and errors
//   client feedback MODEL PLAIN EXPECTED
//                                   online adaptation on an sa2c model: options, pushes and
//                                   feedback calls whose top-k follow EXPECTED, a saved and
//                                   restored session that continues identically, refusals
//                                   (session untouched); PLAIN, without an actor-critic head,
//                                   answers SEQREC_ERR_UNSUPPORTED
//
// Exit status 0 when every check passed; the first failure is printed and exits with 1.

#include "seqrec.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string &what, int line) {
  std::fprintf(stderr, "client.cpp:%d: FAILED: %s\n", line, what.c_str());
  std::exit(1);
}

#define CHECK(cond, what)                                                                        \
  do {                                                                                           \
    if (!(cond)) fail(std::string(#cond) + ": " + (what), __LINE__);                             \
  } while (0)

#define CHECK_OK(call)                                                                           \
  do {                                                                                           \
    seqrec_status st_ = (call);                                                                  \
    if (st_ != SEQREC_OK)                                                                        \
      fail(std::string(#call) + " -> " + std::to_string(st_) + ": " + seqrec_last_error(),      \
           __LINE__);                                                                            \
  } while (0)

// Expects `status` and a last-error message containing `fragment`.
#define CHECK_ERR(call, status, fragment)                                                        \
  do {                                                                                           \
    seqrec_status st_ = (call);                                                                  \
    std::string msg_ = seqrec_last_error();                                                      \
    if (st_ != (status) || msg_.find(fragment) == std::string::npos)                             \
      fail(std::string(#call) + " -> " + std::to_string(st_) + " \"" + msg_ + "\", expected " + \
               std::to_string(status) + " with \"" + (fragment) + "\"",                          \
           __LINE__);                                                                            \
    ++g_errors_checked;                                                                          \
  } while (0)

int g_errors_checked = 0;

std::vector<uint8_t> read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  CHECK(in.good(), "cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Owning wrappers: every handle is freed, so LeakSanitizer sees no leak.
struct Model {
  seqrec_model *p = nullptr;
  Model() = default;
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;
  ~Model() { seqrec_model_free(p); }
};

struct Pdit {
  seqrec_pdit *p = nullptr;
  Pdit() = default;
  Pdit(const Pdit &) = delete;
  Pdit &operator=(const Pdit &) = delete;
  ~Pdit() { seqrec_pdit_free(p); }
};

struct Session {
  seqrec_session *p = nullptr;
  Session() = default;
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;
  ~Session() { seqrec_session_free(p); }
};

// ---- expected results written by the Rust test -------------------------------------------

struct TopkCase {
  long user;  // -1: none
  int exclude;
  size_t k;
  std::vector<uint32_t> history, items;
  std::vector<float> scores;
};

struct ScoreCase {
  long user;
  std::vector<uint32_t> history;
  std::vector<float> scores;
};

struct SessionCase {
  long user;
  size_t k;
  int exclude;
  std::vector<uint32_t> events;
  std::vector<std::vector<uint32_t>> items;  // after each event
  std::vector<std::vector<float>> scores;
};

struct Expected {
  uint32_t n_items = 0, n_users = 0;
  size_t max_len = 0, dim = 0;
  std::string arch;
  std::vector<TopkCase> topk;
  std::vector<ScoreCase> score;
  std::vector<SessionCase> sessions;
};

float to_float(const std::string &s) { return std::strtof(s.c_str(), nullptr); }

Expected read_expected(const std::string &path) {
  std::ifstream in(path);
  CHECK(in.good(), "cannot open " + path);
  Expected e;
  std::string tag, tok;
  auto ids = [&](size_t n) {
    std::vector<uint32_t> v(n);
    for (auto &x : v) in >> x;
    return v;
  };
  auto floats = [&](size_t n) {
    std::vector<float> v(n);
    for (auto &x : v) {
      in >> tok;
      x = to_float(tok);
    }
    return v;
  };
  while (in >> tag) {
    if (tag == "info") {
      in >> e.n_items >> e.n_users >> e.max_len >> e.dim >> e.arch;
    } else if (tag == "topk") {
      TopkCase c;
      size_t len;
      in >> c.user >> c.exclude >> c.k >> len;
      c.history = ids(len);
      c.items = ids(c.k);
      c.scores = floats(c.k);
      e.topk.push_back(std::move(c));
    } else if (tag == "score") {
      ScoreCase c;
      size_t len, n;
      in >> c.user >> len;
      c.history = ids(len);
      in >> n;
      c.scores = floats(n);
      e.score.push_back(std::move(c));
    } else if (tag == "session") {
      SessionCase c;
      size_t m;
      in >> c.user >> c.k >> c.exclude >> m;
      c.events = ids(m);
      for (size_t i = 0; i < m; ++i) {
        c.items.push_back(ids(c.k));
        c.scores.push_back(floats(c.k));
      }
      e.sessions.push_back(std::move(c));
    } else {
      fail("unknown record " + tag + " in " + path, __LINE__);
    }
  }
  CHECK(e.n_items >= 2, "no info record in " + path);
  return e;
}

// Same library on the same machine: identical ids, scores equal up to f32 summation order
// (single requests and batches encode through different but equivalent GEMM paths).
void compare(const std::vector<uint32_t> &items, const std::vector<float> &scores,
             const std::vector<uint32_t> &want_items, const std::vector<float> &want_scores,
             const std::string &ctx) {
  CHECK(items == want_items, ctx + ": items differ");
  for (size_t i = 0; i < scores.size(); ++i) {
    float w = want_scores[i], g = scores[i];
    bool same = (std::isinf(w) && g == w) || std::fabs(g - w) <= 1e-5f * std::fmax(1.f, std::fabs(w));
    CHECK(same, ctx + ": score " + std::to_string(i) + " " + std::to_string(g) + " vs " +
                    std::to_string(w));
  }
}

// The session's top-10 into `items` / `scores`, compared with the ids then scores of a
// `topk` line of EXPECTED (read from `ls`, after its tag).
void expect_session_topk(seqrec_session *s, int exclude, std::istringstream &ls,
                         std::vector<uint32_t> &items, std::vector<float> &scores,
                         const std::string &ctx) {
  std::vector<uint32_t> want_items(10);
  std::vector<float> want_scores(10);
  std::string v;
  for (auto &id : want_items) ls >> id;
  for (auto &x : want_scores) {
    ls >> v;
    x = to_float(v);
  }
  CHECK_OK(seqrec_session_topk(s, 10, exclude, items.data(), scores.data()));
  compare(items, scores, want_items, want_scores, ctx);
}

seqrec_status topk(const seqrec_model *m, long user, const std::vector<uint32_t> &h, size_t k,
                   int exclude, std::vector<uint32_t> &items, std::vector<float> &scores) {
  items.assign(k, 0xFFFFFFFFu);
  scores.assign(k, NAN);
  if (user < 0)
    return seqrec_model_topk(m, h.data(), h.size(), k, exclude, items.data(), scores.data());
  return seqrec_model_topk_user(m, (uint32_t)user, h.data(), h.size(), k, exclude, items.data(),
                                scores.data());
}

void check_topk_cases(const seqrec_model *m, const Expected &e, const std::string &ctx) {
  std::vector<uint32_t> items;
  std::vector<float> scores;
  for (size_t i = 0; i < e.topk.size(); ++i) {
    const TopkCase &c = e.topk[i];
    CHECK_OK(topk(m, c.user, c.history, c.k, c.exclude, items, scores));
    compare(items, scores, c.items, c.scores, ctx + " topk case " + std::to_string(i));
  }
}

void check_sessions(const seqrec_model *m, const Expected &e, const std::string &ctx) {
  for (const SessionCase &c : e.sessions) {
    Session s;
    if (c.user < 0)
      CHECK_OK(seqrec_session_new(m, &s.p));
    else
      CHECK_OK(seqrec_session_new_user(m, (uint32_t)c.user, &s.p));
    std::vector<uint32_t> items(c.k);
    std::vector<float> scores(c.k);
    for (size_t i = 0; i < c.events.size(); ++i) {
      CHECK_OK(seqrec_session_push(s.p, c.events[i]));
      size_t len = 0;
      CHECK_OK(seqrec_session_len(s.p, &len));
      CHECK(len == i + 1, ctx + ": session length");
      CHECK_OK(seqrec_session_topk(s.p, c.k, c.exclude, items.data(), scores.data()));
      compare(items, scores, c.items[i], c.scores[i], ctx + " session step " + std::to_string(i));
    }
  }
}

void check_batch(const seqrec_model *m, const Expected &e, const std::string &ctx) {
  for (int exclude = 0; exclude <= 1; ++exclude) {
    std::vector<const TopkCase *> rows;
    for (const TopkCase &c : e.topk)
      if (c.exclude == exclude && c.k == e.topk[0].k) rows.push_back(&c);
    if (rows.empty()) continue;
    size_t k = rows[0]->k, b = rows.size();
    std::vector<uint32_t> flat, users;
    std::vector<size_t> offsets{0};
    for (const TopkCase *c : rows) {
      flat.insert(flat.end(), c->history.begin(), c->history.end());
      offsets.push_back(flat.size());
      users.push_back(c->user < 0 ? 0 : (uint32_t)c->user);
    }
    std::vector<uint32_t> items(b * k);
    std::vector<float> scores(b * k);
    if (rows[0]->user < 0)
      CHECK_OK(seqrec_model_topk_batch(m, flat.data(), offsets.data(), b, k, exclude, items.data(),
                                       scores.data()));
    else
      CHECK_OK(seqrec_model_topk_batch_user(m, users.data(), flat.data(), offsets.data(), b, k,
                                            exclude, items.data(), scores.data()));
    for (size_t r = 0; r < b; ++r) {
      std::vector<uint32_t> ri(items.begin() + r * k, items.begin() + (r + 1) * k);
      std::vector<float> rs(scores.begin() + r * k, scores.begin() + (r + 1) * k);
      compare(ri, rs, rows[r]->items, rows[r]->scores, ctx + " batch row " + std::to_string(r));
    }
  }
}

int run_check(const std::string &path, const std::string &expected_path) {
  Expected e = read_expected(expected_path);
  Model from_file, from_memory;
  CHECK_OK(seqrec_model_load(path.c_str(), &from_file.p));
  std::vector<uint8_t> bytes = read_file(path);
  CHECK_OK(seqrec_model_load_from_memory(bytes.data(), bytes.size(), &from_memory.p));
  bytes.clear();
  bytes.shrink_to_fit();  // the model copied them

  for (const Model *m : {&from_file, &from_memory}) {
    uint32_t n_items = 0, n_users = 99;
    size_t max_len = 0, dim = 0;
    const char *arch = nullptr;
    CHECK_OK(seqrec_model_num_items(m->p, &n_items));
    CHECK_OK(seqrec_model_num_users(m->p, &n_users));
    CHECK_OK(seqrec_model_max_len(m->p, &max_len));
    CHECK_OK(seqrec_model_dim(m->p, &dim));
    CHECK_OK(seqrec_model_arch(m->p, &arch));
    CHECK(n_items == e.n_items && n_users == e.n_users, "catalog / users");
    CHECK(max_len == e.max_len && dim == e.dim, "window / dim");
    CHECK(e.arch == arch, "arch");
    CHECK(std::string(seqrec_last_error()).empty(), "success leaves no message");
  }
  const seqrec_model *m = from_file.p;
  check_topk_cases(m, e, e.arch + " (file)");
  check_topk_cases(from_memory.p, e, e.arch + " (memory)");
  for (const ScoreCase &c : e.score) {
    std::vector<float> scores(e.n_items + 2, -7.f);
    if (c.user < 0)
      CHECK_OK(seqrec_model_score(m, c.history.data(), c.history.size(), scores.data(),
                                  scores.size()));
    else
      CHECK_OK(seqrec_model_score_user(m, (uint32_t)c.user, c.history.data(), c.history.size(),
                                       scores.data(), scores.size()));
    CHECK(scores[e.n_items] == -7.f && scores[e.n_items + 1] == -7.f, "wrote past num_items");
    scores.resize(e.n_items);
    std::vector<uint32_t> none;
    compare(none, scores, none, c.scores, e.arch + " scores");
  }
  check_batch(m, e, e.arch);
  check_sessions(m, e, e.arch);

  // Eight threads on one model: the same answers, sessions of their own, and each thread's
  // own last error even while the others fail too.
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint32_t> bad{e.n_items + (uint32_t)t};
      std::vector<uint32_t> items;
      std::vector<float> scores;
      std::string want = "item id " + std::to_string(e.n_items + t);
      for (int round = 0; round < 4; ++round) {
        check_topk_cases(m, e, e.arch + " thread " + std::to_string(t));
        long user = e.n_users > 0 ? 0 : -1;
        CHECK(topk(m, user, bad, 1, 0, items, scores) == SEQREC_ERR_OUT_OF_RANGE, "bad id");
        std::this_thread::yield();
        std::string msg = seqrec_last_error();
        CHECK(msg.find(want) != std::string::npos, "thread-local message: " + msg);
      }
      check_sessions(m, e, e.arch + " thread " + std::to_string(t));
      done.fetch_add(1);
    });
  }
  for (auto &th : threads) th.join();
  CHECK(done.load() == 8, "all threads finished");
  std::printf("check %s: %zu top-k, %zu score, %zu session cases; 8 threads agree\n",
              e.arch.c_str(), e.topk.size(), e.score.size(), e.sessions.size());
  return 0;
}

// ---- error paths ---------------------------------------------------------------------------

int run_errors(const std::string &path, const std::string &caser_path) {
  const auto IA = SEQREC_ERR_INVALID_ARGUMENT;
  const auto OOR = SEQREC_ERR_OUT_OF_RANGE;
  Model model, caser;
  CHECK_OK(seqrec_model_load(path.c_str(), &model.p));
  CHECK_OK(seqrec_model_load(caser_path.c_str(), &caser.p));
  const seqrec_model *m = model.p, *c = caser.p;
  uint32_t n = 0, n_users = 0;
  CHECK_OK(seqrec_model_num_items(m, &n));
  CHECK_OK(seqrec_model_num_users(c, &n_users));
  CHECK(n_users > 0, "caser has users");
  const std::string max_id = std::to_string(n - 1);

  // Loading.
  seqrec_model *out = nullptr;
  CHECK_ERR(seqrec_model_load("/nonexistent/model.safetensors", &out), SEQREC_ERR_IO,
            "seqrec_model_load: /nonexistent/model.safetensors");
  CHECK_ERR(seqrec_model_load(nullptr, &out), IA, "path is NULL");
  CHECK_ERR(seqrec_model_load(path.c_str(), nullptr), IA, "out is NULL");
  const uint8_t junk[16] = {1, 2, 3};
  CHECK_ERR(seqrec_model_load_from_memory(junk, sizeof junk, &out), SEQREC_ERR_FORMAT,
            "invalid safetensors");
  CHECK_ERR(seqrec_model_load_from_memory(junk, 0, &out), SEQREC_ERR_FORMAT, "invalid safetensors");
  CHECK_ERR(seqrec_model_load_from_memory(nullptr, 16, &out), IA, "data is NULL");
  CHECK_ERR(seqrec_model_load_from_memory(junk, 16, nullptr), IA, "out is NULL");
  CHECK(out == nullptr, "out written on failure");

  // Properties.
  uint32_t u32 = 12345;
  size_t sz = 12345;
  const char *name = nullptr;
  CHECK_ERR(seqrec_model_num_items(nullptr, &u32), IA, "model is NULL");
  CHECK_ERR(seqrec_model_num_items(m, nullptr), IA, "out is NULL");
  CHECK_ERR(seqrec_model_num_users(nullptr, &u32), IA, "model is NULL");
  CHECK_ERR(seqrec_model_max_len(nullptr, &sz), IA, "model is NULL");
  CHECK_ERR(seqrec_model_dim(m, nullptr), IA, "out is NULL");
  CHECK_ERR(seqrec_model_arch(nullptr, &name), IA, "model is NULL");
  CHECK(u32 == 12345 && sz == 12345 && name == nullptr, "out written on failure");

  // Scores.
  std::vector<uint32_t> h{1, 2, 3}, empty;
  std::vector<float> scores(n, -7.f);
  auto untouched = [&] {
    for (float s : scores)
      if (s != -7.f) return false;
    return true;
  };
  CHECK_ERR(seqrec_model_score(m, h.data(), 0, scores.data(), n), IA, "empty history");
  CHECK_ERR(seqrec_model_score(m, h.data(), 3, scores.data(), n - 1), IA,
            "scores_len is " + std::to_string(n - 1) + " but the catalog has " + std::to_string(n));
  CHECK_ERR(seqrec_model_score(m, nullptr, 3, scores.data(), n), IA, "history is NULL");
  CHECK_ERR(seqrec_model_score(m, h.data(), 3, nullptr, n), IA, "scores_out is NULL");
  CHECK_ERR(seqrec_model_score(nullptr, h.data(), 3, scores.data(), n), IA, "model is NULL");
  std::vector<uint32_t> zero{5, 0}, high{n}, top{0xFFFFFFFFu};
  CHECK_ERR(seqrec_model_score(m, zero.data(), 2, scores.data(), n), OOR,
            "item id 0 at history position 1 is out of range: valid ids are 1..=" + max_id);
  CHECK_ERR(seqrec_model_score(m, high.data(), 1, scores.data(), n), OOR,
            "item id " + std::to_string(n));
  CHECK_ERR(seqrec_model_score(m, top.data(), 1, scores.data(), n), OOR, "item id 4294967295");
  CHECK_ERR(seqrec_model_score_user(m, 0, h.data(), 3, scores.data(), n), IA, "no user embedding");
  CHECK(untouched(), "scores written on failure");

  // Top-k.
  std::vector<uint32_t> items(n, 0xABCDu);
  auto items_untouched = [&] {
    for (uint32_t i : items)
      if (i != 0xABCDu) return false;
    return true;
  };
  float *sp = scores.data();
  uint32_t *ip = items.data();
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, 0, 0, ip, sp), IA, "k is 0");
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, n, 0, ip, sp), OOR,
            "k = " + std::to_string(n) + " exceeds the catalog's " + max_id + " items");
  CHECK_ERR(seqrec_model_topk(m, empty.data(), 0, 5, 0, ip, sp), IA, "empty history");
  CHECK_ERR(seqrec_model_topk(m, zero.data(), 2, 5, 0, ip, sp), OOR, "item id 0");
  CHECK_ERR(seqrec_model_topk(m, high.data(), 1, 5, 0, ip, sp), OOR, "item id " + std::to_string(n));
  CHECK_ERR(seqrec_model_topk(nullptr, h.data(), 3, 5, 0, ip, sp), IA, "model is NULL");
  CHECK_ERR(seqrec_model_topk(m, nullptr, 3, 5, 0, ip, sp), IA, "history is NULL");
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, 5, 0, nullptr, sp), IA, "items_out is NULL");
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, 5, 0, ip, nullptr), IA, "scores_out is NULL");
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, 5, 0, ip, reinterpret_cast<float *>(ip + 2)), IA,
            "items_out overlaps scores_out");
  CHECK_ERR(seqrec_model_topk(m, h.data(), 3, 5, 0, ip,
                              reinterpret_cast<float *>(reinterpret_cast<char *>(sp) + 1)),
            IA, "scores_out is not aligned");
  CHECK_ERR(seqrec_model_topk_user(m, 1, h.data(), 3, 5, 0, ip, sp), IA, "no user embedding");
  CHECK_ERR(seqrec_model_topk(c, h.data(), 3, 5, 0, ip, sp), IA, "user id is required");
  CHECK_ERR(seqrec_model_topk_user(c, n_users, h.data(), 3, 5, 0, ip, sp), OOR,
            "user id " + std::to_string(n_users) + " is out of range");
  CHECK_ERR(seqrec_model_score(c, h.data(), 3, scores.data(), n), IA, "user id is required");
  CHECK(untouched() && items_untouched(), "outputs written on failure");

  // Batches.
  std::vector<uint32_t> flat{1, 2, 3, 4, 5, 0};
  std::vector<size_t> offs{0, 2, 5}, down{0, 4, 2}, hole{0, 2, 2}, bad_row{0, 2, 6};
  std::vector<uint32_t> users{0, n_users};
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), down.data(), 2, 3, 0, ip, sp), IA,
            "offsets must be non-decreasing: offsets[1] = 4 > offsets[2] = 2");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), hole.data(), 2, 3, 0, ip, sp), IA,
            "history 1: empty history");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), bad_row.data(), 2, 3, 0, ip, sp), OOR,
            "history 1: item id 0 at history position 3");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), offs.data(), 2, 0, 0, ip, sp), IA, "k is 0");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), offs.data(), 2, n, 0, ip, sp), OOR, "exceeds");
  CHECK_ERR(seqrec_model_topk_batch(m, nullptr, offs.data(), 2, 3, 0, ip, sp), IA,
            "histories is NULL");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), nullptr, 2, 3, 0, ip, sp), IA,
            "offsets is NULL");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), offs.data(), 2, 3, 0, nullptr, sp), IA,
            "items_out is NULL");
  CHECK_ERR(seqrec_model_topk_batch(m, flat.data(), offs.data(), 2, 3, 0, ip, nullptr), IA,
            "scores_out is NULL");
  CHECK_ERR(seqrec_model_topk_batch(nullptr, flat.data(), offs.data(), 2, 3, 0, ip, sp), IA,
            "model is NULL");
  CHECK_ERR(seqrec_model_topk_batch(c, flat.data(), offs.data(), 2, 3, 0, ip, sp), IA,
            "history 0: ");
  CHECK_ERR(seqrec_model_topk_batch_user(c, users.data(), flat.data(), offs.data(), 2, 3, 0, ip, sp),
            OOR, "history 1: user id " + std::to_string(n_users));
  CHECK_ERR(seqrec_model_topk_batch_user(c, nullptr, flat.data(), offs.data(), 2, 3, 0, ip, sp), IA,
            "users is NULL");
  CHECK_ERR(seqrec_model_topk_batch_user(m, users.data(), flat.data(), offs.data(), 2, 3, 0, ip, sp),
            IA, "no user embedding");
  CHECK(untouched() && items_untouched(), "outputs written on failure");
  CHECK_OK(seqrec_model_topk_batch(m, nullptr, nullptr, 0, 3, 0, nullptr, nullptr));

  // Sessions.
  seqrec_session *sout = nullptr;
  CHECK_ERR(seqrec_session_new(nullptr, &sout), IA, "model is NULL");
  CHECK_ERR(seqrec_session_new(m, nullptr), IA, "out is NULL");
  CHECK_ERR(seqrec_session_new(c, &sout), IA, "user id is required");
  CHECK_ERR(seqrec_session_new_user(c, n_users, &sout), OOR, "user id");
  CHECK_ERR(seqrec_session_new_user(m, 0, &sout), IA, "no user embedding");
  CHECK(sout == nullptr, "session written on failure");
  Session s;
  CHECK_OK(seqrec_session_new(m, &s.p));
  CHECK_ERR(seqrec_session_topk(s.p, 3, 0, ip, sp), IA, "seqrec_session_topk: empty history");
  CHECK_ERR(seqrec_session_score(s.p, sp, n), IA, "seqrec_session_score: empty history");
  CHECK_ERR(seqrec_session_push(s.p, 0), OOR, "item id 0");
  CHECK_ERR(seqrec_session_push(s.p, n), OOR, "item id " + std::to_string(n));
  CHECK_ERR(seqrec_session_push(nullptr, 1), IA, "session is NULL");
  size_t len = 99;
  CHECK_OK(seqrec_session_len(s.p, &len));
  CHECK(len == 0, "failed pushes change nothing");
  CHECK_ERR(seqrec_session_len(nullptr, &len), IA, "session is NULL");
  CHECK_ERR(seqrec_session_len(s.p, nullptr), IA, "out is NULL");
  CHECK_OK(seqrec_session_push(s.p, 1));
  CHECK_ERR(seqrec_session_topk(s.p, 0, 0, ip, sp), IA, "k is 0");
  CHECK_ERR(seqrec_session_topk(s.p, n, 0, ip, sp), OOR, "exceeds");
  CHECK_ERR(seqrec_session_topk(nullptr, 3, 0, ip, sp), IA, "session is NULL");
  CHECK_ERR(seqrec_session_topk(s.p, 3, 0, nullptr, sp), IA, "items_out is NULL");
  CHECK_ERR(seqrec_session_topk(s.p, 3, 0, ip, nullptr), IA, "scores_out is NULL");
  CHECK_ERR(seqrec_session_score(s.p, sp, n - 1), IA, "scores_len");
  CHECK_ERR(seqrec_session_score(s.p, nullptr, n), IA, "scores_out is NULL");
  CHECK_ERR(seqrec_session_score(nullptr, sp, n), IA, "session is NULL");
  CHECK(untouched() && items_untouched(), "outputs written on failure");

  // Fewer than k items left after exclusions: id 0 and -INFINITY fill the tail.
  std::vector<uint32_t> all;
  for (uint32_t i = 1; i < n; ++i) all.push_back(i);
  all.pop_back();  // every item but the last is in the history
  CHECK_OK(seqrec_model_topk(m, all.data(), all.size(), 3, 1, ip, sp));
  CHECK(items[0] == n - 1 && std::isfinite(scores[0]), "the one item left");
  CHECK(items[1] == 0 && items[2] == 0, "id 0 fills");
  CHECK(std::isinf(scores[1]) && scores[1] < 0 && std::isinf(scores[2]), "-INFINITY fills");

  // free(NULL) is a no-op and keeps the last message.
  CHECK_ERR(seqrec_session_push(nullptr, 1), IA, "session is NULL");
  seqrec_model_free(nullptr);
  seqrec_session_free(nullptr);
  CHECK(std::string(seqrec_last_error()).find("session is NULL") != std::string::npos,
        "free(NULL) kept the message");
  CHECK(std::string(seqrec_version()).find('.') != std::string::npos, "version");
  std::printf("errors: %d error paths checked\n", g_errors_checked);
  return 0;
}

// ---- corrupt files -------------------------------------------------------------------------

bool exercise(const seqrec_model *m) {
  uint32_t n = 0, users = 0;
  CHECK_OK(seqrec_model_num_items(m, &n));
  CHECK_OK(seqrec_model_num_users(m, &users));
  long user = users > 0 ? 0 : -1;
  std::vector<uint32_t> h{1, n - 1, 1};
  std::vector<uint32_t> items;
  std::vector<float> scores;
  size_t k = n - 1 < 5 ? n - 1 : 5;
  CHECK_OK(topk(m, user, h, k, 1, items, scores));
  std::vector<float> all(n);
  if (user < 0)
    CHECK_OK(seqrec_model_score(m, h.data(), h.size(), all.data(), n));
  else
    CHECK_OK(seqrec_model_score_user(m, 0, h.data(), h.size(), all.data(), n));
  Session s;
  if (user < 0)
    CHECK_OK(seqrec_session_new(m, &s.p));
  else
    CHECK_OK(seqrec_session_new_user(m, 0, &s.p));
  for (uint32_t id : h) CHECK_OK(seqrec_session_push(s.p, id));
  CHECK_OK(seqrec_session_topk(s.p, k, 0, items.data(), scores.data()));
  return true;
}

int run_mutants(int argc, char **argv) {
  int loaded = 0, rejected = 0;
  for (int i = 2; i < argc; ++i) {
    std::vector<uint8_t> bytes = read_file(argv[i]);
    Model a, b;
    seqrec_status from_file = seqrec_model_load(argv[i], &a.p);
    std::string file_msg = seqrec_last_error();
    seqrec_status from_memory = seqrec_model_load_from_memory(bytes.data(), bytes.size(), &b.p);
    CHECK(from_file == from_memory, std::string(argv[i]) + ": file and memory disagree: " + file_msg);
    CHECK(from_file == SEQREC_OK || from_file == SEQREC_ERR_FORMAT,
          std::string(argv[i]) + ": status " + std::to_string(from_file) + ": " + file_msg);
    if (from_file == SEQREC_OK) {
      CHECK(a.p && b.p, "handles");
      exercise(a.p);
      exercise(b.p);
      ++loaded;
    } else {
      CHECK(!a.p && !b.p, "handle written on failure");
      CHECK(!file_msg.empty(), "message for a rejected file");
      ++rejected;
    }
  }
  std::printf("mutants: %d loaded, %d rejected\n", loaded, rejected);
  return 0;
}

// ---- objective knobs -----------------------------------------------------------------------

int run_knobs(const std::string &path, const std::string &expected_path) {
  std::ifstream in(expected_path);
  CHECK(in.good(), "cannot open " + expected_path);
  Model model;
  CHECK_OK(seqrec_model_load(path.c_str(), &model.p));
  const seqrec_model *m = model.p;
  Session s;
  CHECK_OK(seqrec_session_new(m, &s.p));
  std::vector<uint32_t> items(10), first, last;
  std::vector<float> scores(10);
  std::string line, knob;
  size_t n_knobs = 0, listed = 0, changes = 0;
  bool changed = false;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    ls >> tag;
    if (tag == "objectives") {
      size_t want = 0;
      ls >> want;
      CHECK_OK(seqrec_model_num_objectives(m, &n_knobs));
      CHECK(n_knobs == want && n_knobs > 0, "number of knobs");
    } else if (tag == "objective") {
      std::string name, def;
      ls >> name >> def;
      const char *got = nullptr;
      float got_def = 0.f;
      CHECK_OK(seqrec_model_objective(m, listed, &got, &got_def));
      float want_def = to_float(def);
      CHECK(name == got, "knob " + std::to_string(listed) + " is " + got + ", expected " + name);
      CHECK((std::isnan(want_def) && std::isnan(got_def)) || got_def == want_def,
            name + ": default " + std::to_string(got_def));
      if (knob.empty()) knob = name;
      ++listed;
    } else if (tag == "history") {
      size_t len = 0;
      ls >> len;
      for (size_t i = 0; i < len; ++i) {
        uint32_t id = 0;
        ls >> id;
        CHECK_OK(seqrec_session_push(s.p, id));
      }
    } else if (tag == "set") {
      std::string name, value;
      ls >> name >> value;
      CHECK_OK(seqrec_session_set_objective(s.p, name.c_str(), to_float(value)));
      ++changes;
    } else if (tag == "topk") {
      expect_session_topk(s.p, 0, ls, items, scores,
                          path + " after " + std::to_string(changes) + " knob changes");
      if (first.empty()) first = items;
      changed = changed || items != first;
      last = items;
    }
  }
  CHECK(listed == n_knobs && changes > 0, "knob records in " + expected_path);
  CHECK(changed, "setting the knobs never changed the ranking");

  // Refused knobs name the problem and leave the session as it was.
  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT;
  CHECK_ERR(seqrec_session_set_objective(s.p, "no_such_knob", 1.f), IA, "no_such_knob");
  CHECK_ERR(seqrec_session_set_objective(s.p, knob.c_str(), -1e9f), IA, knob);
  CHECK_ERR(seqrec_session_set_objective(s.p, knob.c_str(), NAN), IA, knob);
  CHECK_ERR(seqrec_session_set_objective(s.p, nullptr, 1.f), IA, "NULL");
  CHECK_ERR(seqrec_session_set_objective(nullptr, knob.c_str(), 1.f), IA, "NULL");
  const char bad_utf8[] = {'\xff', '\xfe', 0};
  CHECK_ERR(seqrec_session_set_objective(s.p, bad_utf8, 1.f), IA, "UTF-8");
  CHECK_OK(seqrec_session_topk(s.p, 10, 0, items.data(), scores.data()));
  CHECK(items == last, "a refused knob changed the ranking");
  const char *name = nullptr;
  float def = 0.f;
  CHECK_ERR(seqrec_model_objective(m, n_knobs, &name, &def), SEQREC_ERR_OUT_OF_RANGE, "");

  // A session boundary: the session goes on and still recommends.
  CHECK_OK(seqrec_session_end(s.p));
  CHECK_ERR(seqrec_session_end(nullptr), IA, "NULL");
  CHECK_OK(seqrec_session_push(s.p, first[0]));
  CHECK_OK(seqrec_session_topk(s.p, 10, 0, items.data(), scores.data()));
  std::printf("knobs: %zu knobs, %zu changes followed, %d refusals\n", n_knobs, changes,
              g_errors_checked);
  return 0;
}


// ---- PDiT ----------------------------------------------------------------------------------

struct PditCase {
  uint32_t steps;
  uint64_t seed;
  size_t n_history, k;
  std::vector<float> prompt, history, latent, scores;
  std::vector<uint32_t> exclude, items;
};

// One case: the request, the latent and the top-k the Rust API gave.
void check_pdit_case(const seqrec_pdit *m, const PditCase &c, const std::string &ctx) {
  std::vector<float> latent(c.latent.size(), NAN);
  CHECK_OK(seqrec_pdit_generate(m, c.prompt.empty() ? nullptr : c.prompt.data(), c.prompt.size(),
                                c.history.data(), c.n_history, c.steps, c.seed, latent.data(),
                                latent.size()));
  for (size_t i = 0; i < latent.size(); ++i) {
    float w = c.latent[i], g = latent[i];
    CHECK(std::fabs(g - w) <= 1e-5f * std::fmax(1.f, std::fabs(w)),
          ctx + ": latent " + std::to_string(i) + " " + std::to_string(g) + " vs " +
              std::to_string(w));
  }
  std::vector<uint32_t> items(c.k, 0xFFFFFFFFu);
  std::vector<float> scores(c.k, NAN);
  size_t n = 0;
  CHECK_OK(seqrec_pdit_topk(m, c.prompt.empty() ? nullptr : c.prompt.data(), c.prompt.size(),
                            c.history.data(), c.n_history, c.steps, c.seed,
                            c.exclude.empty() ? nullptr : c.exclude.data(), c.exclude.size(), c.k,
                            items.data(), scores.data(), &n));
  size_t want_n = 0;
  for (uint32_t id : c.items) want_n += id != 0;
  CHECK(n == want_n, ctx + ": " + std::to_string(n) + " items written");
  compare(items, scores, c.items, c.scores, ctx);
}

int run_pdit(const std::string &path, const std::string &catalog, const std::string &bad_catalog,
             const std::string &expected_path) {
  std::ifstream in(expected_path);
  CHECK(in.good(), "cannot open " + expected_path);
  size_t d = 0, cond = 0, max_hist = 0, steps = 0;
  std::string tag, tok;
  in >> tag >> d >> cond >> max_hist >> steps;
  CHECK(tag == "dims", "no dims record in " + expected_path);
  auto floats = [&](size_t n) {
    std::vector<float> v(n);
    for (auto &x : v) {
      in >> tok;
      x = to_float(tok);
    }
    return v;
  };
  auto ids = [&](size_t n) {
    std::vector<uint32_t> v(n);
    for (auto &x : v) in >> x;
    return v;
  };
  std::vector<PditCase> cases;
  while (in >> tag) {
    CHECK(tag == "case", "unknown record " + tag + " in " + expected_path);
    PditCase c;
    size_t n_exclude = 0;
    in >> c.steps >> c.seed >> c.n_history >> n_exclude >> c.k;
    c.prompt = floats(cond);
    c.history = floats(c.n_history * d);
    c.exclude = ids(n_exclude);
    c.latent = floats(d);
    c.items = ids(c.k);
    c.scores = floats(c.k);
    cases.push_back(std::move(c));
  }
  CHECK(!cases.empty(), "no cases in " + expected_path);

  Pdit pdit, bare;
  CHECK_OK(seqrec_pdit_load(path.c_str(), catalog.c_str(), &pdit.p));
  CHECK_OK(seqrec_pdit_load(path.c_str(), nullptr, &bare.p));
  const seqrec_pdit *m = pdit.p;
  size_t got[4] = {0, 0, 0, 0};
  CHECK_OK(seqrec_pdit_dims(m, &got[0], &got[1], &got[2], &got[3]));
  CHECK(got[0] == d && got[1] == cond && got[2] == max_hist && got[3] == steps,
        "dims " + std::to_string(got[0]) + " " + std::to_string(got[1]) + " " +
            std::to_string(got[2]) + " " + std::to_string(got[3]));
  CHECK_OK(seqrec_pdit_dims(m, nullptr, nullptr, nullptr, &got[3]));
  for (size_t i = 0; i < cases.size(); ++i) check_pdit_case(m, cases[i], path + " case " + std::to_string(i));

  // Four threads on one handle, each through every case twice: the same answers.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 2; ++rep)
        for (size_t i = 0; i < cases.size(); ++i)
          check_pdit_case(m, cases[(i + t) % cases.size()], "thread " + std::to_string(t));
    });
  for (auto &th : threads) th.join();

  // Errors name the problem; outputs stay as they were.
  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT, OR = SEQREC_ERR_OUT_OF_RANGE;
  seqrec_pdit *out = nullptr;
  CHECK_ERR(seqrec_pdit_load("/nonexistent/pdit.safetensors", nullptr, &out), SEQREC_ERR_IO,
            "/nonexistent/pdit.safetensors");
  CHECK_ERR(seqrec_pdit_load(nullptr, nullptr, &out), IA, "path is NULL");
  CHECK_ERR(seqrec_pdit_load(path.c_str(), nullptr, nullptr), IA, "out is NULL");
  CHECK_ERR(seqrec_pdit_load(path.c_str(), bad_catalog.c_str(), &out), IA, "wide");
  CHECK_ERR(seqrec_pdit_load(path.c_str(), "/nonexistent/catalog.safetensors", &out),
            SEQREC_ERR_IO, "/nonexistent/catalog.safetensors");
  CHECK(out == nullptr, "a failed load wrote its handle");
  CHECK_ERR(seqrec_pdit_dims(nullptr, &got[0], nullptr, nullptr, nullptr), IA, "pdit is NULL");

  const PditCase &c = cases[0];
  const float *prompt = c.prompt.empty() ? nullptr : c.prompt.data();
  std::vector<float> latent(d, 7.f);
  std::vector<uint32_t> items(c.k, 7);
  std::vector<float> scores(c.k, 7.f);
  size_t n = 7;
  auto untouched = [&](const std::string &what) {
    for (float v : latent) CHECK(v == 7.f, what + " wrote the latent");
    for (uint32_t v : items) CHECK(v == 7, what + " wrote the items");
    for (float v : scores) CHECK(v == 7.f, what + " wrote the scores");
    CHECK(n == 7, what + " wrote the count");
  };
  auto generate = [&](const float *p, size_t p_len, const float *h, size_t n_h, uint32_t s,
                      float *o, size_t o_len) {
    return seqrec_pdit_generate(m, p, p_len, h, n_h, s, c.seed, o, o_len);
  };
  const float *h = c.history.data();
  CHECK_ERR(seqrec_pdit_generate(nullptr, prompt, cond, h, c.n_history, 0, 1, latent.data(), d),
            IA, "pdit is NULL");
  CHECK_ERR(generate(prompt, cond, h, c.n_history, 0, latent.data(), d - 1), IA, "out_latent");
  CHECK_ERR(generate(prompt, cond, h, c.n_history, 0, nullptr, d), IA, "out_latent is NULL");
  CHECK_ERR(generate(prompt, cond, h, c.n_history, 1, latent.data(), d), IA, "2..=");
  CHECK_ERR(generate(prompt, cond, h, c.n_history, (uint32_t)steps + 1, latent.data(), d), IA,
            "2..=");
  if (cond > 0) {
    CHECK_ERR(generate(prompt, cond - 1, h, c.n_history, 0, latent.data(), d), IA, "prompt has");
    CHECK_ERR(generate(nullptr, cond, h, c.n_history, 0, latent.data(), d), IA, "prompt is NULL");
  }
  if (c.n_history > 0) {
    std::vector<float> long_history((max_hist + 1) * d, 0.1f);
    CHECK_ERR(generate(prompt, cond, long_history.data(), max_hist + 1, 0, latent.data(), d), IA,
              "max_hist_len");
    CHECK_ERR(generate(prompt, cond, h, 0, 0, latent.data(), d), IA, "empty history");
    CHECK_ERR(generate(prompt, cond, nullptr, c.n_history, 0, latent.data(), d), IA,
              "history is NULL");
    CHECK_ERR(generate(prompt, cond, latent.data(), 1, 0, latent.data(), d), IA, "overlap");
  }
  untouched("a refused generation");
  auto topk = [&](const seqrec_pdit *handle, size_t k, uint32_t *it, float *sc, size_t *cnt) {
    return seqrec_pdit_topk(handle, prompt, cond, h, c.n_history, 0, c.seed, nullptr, 0, k, it, sc,
                            cnt);
  };
  CHECK_ERR(topk(bare.p, c.k, items.data(), scores.data(), &n), IA, "no catalog");
  CHECK_ERR(topk(m, 0, items.data(), scores.data(), &n), OR, "k = 0");
  CHECK_ERR(topk(m, 1u << 30, items.data(), scores.data(), &n), OR, "the catalog has items");
  CHECK_ERR(topk(m, c.k, items.data(), scores.data(), nullptr), IA, "out_n is NULL");
  CHECK_ERR(topk(m, c.k, nullptr, scores.data(), &n), IA, "out_items is NULL");
  CHECK_ERR(topk(nullptr, c.k, items.data(), scores.data(), &n), IA, "pdit is NULL");
  CHECK_ERR(seqrec_pdit_topk(m, prompt, cond, h, c.n_history, 1, c.seed, nullptr, 0, c.k,
                             items.data(), scores.data(), &n),
            IA, "2..=");
  CHECK_ERR(seqrec_pdit_topk(m, prompt, cond, h, c.n_history, 0, c.seed, nullptr, 3, c.k,
                             items.data(), scores.data(), &n),
            IA, "exclude is NULL");
  untouched("a refused top-k");
  CHECK_OK(seqrec_pdit_generate(m, prompt, cond, h, c.n_history, 0, c.seed, latent.data(), d));
  std::printf("pdit: %zu cases, 4 threads, %d refusals\n", cases.size(), g_errors_checked);
  return 0;
}

// ---- ranking services: candidates and per-request options ----------------------------------

// Reads "name value" knob pairs into `names`/`knobs` (the names must outlive the call).
void read_knobs(std::istringstream &ls, size_t n, std::vector<std::string> &names,
                std::vector<seqrec_objective> &knobs) {
  names.resize(n);
  knobs.resize(n);
  for (size_t i = 0; i < n; ++i) {
    std::string v;
    ls >> names[i] >> v;
    knobs[i].value = to_float(v);
  }
  for (size_t i = 0; i < n; ++i) knobs[i].name = names[i].c_str();
}

void check_exact(const std::vector<float> &got, const std::vector<float> &want,
                 const std::string &ctx) {
  CHECK(got.size() == want.size(), ctx + ": length");
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == want[i], ctx + ": score " + std::to_string(i) + " " + std::to_string(got[i]) +
                                 " vs " + std::to_string(want[i]));
}

int run_ranking(const std::string &path, const std::string &expected_path) {
  std::ifstream in(expected_path);
  CHECK(in.good(), "cannot open " + expected_path);
  Model model;
  CHECK_OK(seqrec_model_load(path.c_str(), &model.p));
  const seqrec_model *m = model.p;
  std::string line;
  size_t cases = 0;
  auto read_ids = [](std::istringstream &ls, size_t n) {
    std::vector<uint32_t> v(n);
    for (auto &x : v) ls >> x;
    return v;
  };
  auto read_floats = [](std::istringstream &ls, size_t n) {
    std::vector<float> v(n);
    std::string t;
    for (auto &x : v) {
      ls >> t;
      x = to_float(t);
    }
    return v;
  };
  std::vector<uint32_t> last_history;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    long user = -1;
    size_t len = 0;
    ls >> tag >> user >> len;
    std::vector<uint32_t> history = read_ids(ls, len);
    last_history = history;
    if (tag == "candidates") {
      // candidates USER LEN history.. N ids.. scores.. NKNOBS name value..
      size_t n = 0, n_knobs = 0;
      ls >> n;
      std::vector<uint32_t> cand = read_ids(ls, n);
      std::vector<float> want = read_floats(ls, n), got(n, NAN);
      ls >> n_knobs;
      std::vector<std::string> names;
      std::vector<seqrec_objective> knobs;
      read_knobs(ls, n_knobs, names, knobs);
      if (n_knobs == 0 && user < 0) {
        CHECK_OK(seqrec_model_score_candidates(m, history.data(), len, cand.data(), n,
                                               got.data()));
      } else if (n_knobs == 0) {
        CHECK_OK(seqrec_model_score_candidates_user(m, (uint32_t)user, history.data(), len,
                                                    cand.data(), n, got.data()));
      } else {
        seqrec_request_options o{};
        o.has_user = user >= 0;
        o.user = user < 0 ? 0 : (uint32_t)user;
        o.objectives = knobs.data();
        o.num_objectives = n_knobs;
        CHECK_OK(seqrec_model_score_candidates_with(m, history.data(), len, &o, cand.data(), n,
                                                    got.data()));
      }
      check_exact(got, want, path + " candidates case " + std::to_string(cases));
    } else if (tag == "with") {
      // with USER LEN history.. EXCL NEX ex.. NKNOBS name value.. K items.. scores.. NSCORES s..
      int excl = 0;
      size_t n_ex = 0, n_knobs = 0, k = 0, n_scores = 0;
      ls >> excl >> n_ex;
      std::vector<uint32_t> ex = read_ids(ls, n_ex);
      ls >> n_knobs;
      std::vector<std::string> names;
      std::vector<seqrec_objective> knobs;
      read_knobs(ls, n_knobs, names, knobs);
      ls >> k;
      std::vector<uint32_t> want_items = read_ids(ls, k), items(k, 0xFFFFFFFFu);
      std::vector<float> want_scores = read_floats(ls, k), scores(k, NAN);
      ls >> n_scores;
      std::vector<float> want_all = read_floats(ls, n_scores), all(n_scores, NAN);
      seqrec_request_options o{};
      o.has_user = user >= 0;
      o.user = user < 0 ? 0 : (uint32_t)user;
      o.exclude_history = excl;
      o.exclude = ex.data();
      o.exclude_len = n_ex;
      o.objectives = knobs.data();
      o.num_objectives = n_knobs;
      CHECK_OK(seqrec_model_topk_with(m, history.data(), len, &o, k, items.data(), scores.data()));
      compare(items, scores, want_items, want_scores,
              path + " topk_with case " + std::to_string(cases));
      for (uint32_t id : items)
        for (uint32_t x : ex) CHECK(id != x, "an excluded id was recommended");
      CHECK_OK(seqrec_model_score_with(m, history.data(), len, &o, all.data(), all.size()));
      check_exact(all, want_all, path + " score_with case " + std::to_string(cases));
    } else {
      fail("unknown record " + tag + " in " + expected_path, __LINE__);
    }
    ++cases;
  }
  CHECK(cases > 0, "no cases in " + expected_path);

  // Errors: statuses, messages, and untouched outputs.
  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT;
  uint32_t n_items = 0, n_users = 0;
  CHECK_OK(seqrec_model_num_items(m, &n_items));
  CHECK_OK(seqrec_model_num_users(m, &n_users));
  const std::vector<uint32_t> &h = last_history;
  std::vector<uint32_t> cand{1, 2, 3};
  std::vector<float> out(3, 7.f);
  seqrec_request_options o{};
  o.has_user = n_users > 0;
  if (n_users == 0) {
    CHECK_ERR(seqrec_model_score_candidates(m, h.data(), h.size(), nullptr, 3, out.data()), IA,
              "candidates is NULL");
    CHECK_ERR(seqrec_model_score_candidates(m, h.data(), h.size(), cand.data(), 0, out.data()), IA,
              "n_candidates is 0");
    std::vector<uint32_t> bad{1, n_items, 2};
    CHECK_ERR(seqrec_model_score_candidates(m, h.data(), h.size(), bad.data(), 3, out.data()), IA,
              "candidate id");
    CHECK_ERR(seqrec_model_score_candidates(m, h.data(), h.size(), cand.data(), 3,
                                            (float *)cand.data()),
              IA, "overlaps");
    CHECK_ERR(seqrec_model_score_candidates_user(m, 1, h.data(), h.size(), cand.data(), 3,
                                                 out.data()),
              IA, "no user embedding");
  } else {
    CHECK_ERR(seqrec_model_score_candidates(m, h.data(), h.size(), cand.data(), 3, out.data()), IA,
              "user id is required");
    CHECK_ERR(seqrec_model_score_candidates_user(m, n_users, h.data(), h.size(), cand.data(), 3,
                                                 out.data()),
              SEQREC_ERR_OUT_OF_RANGE, "user id");
  }
  CHECK_ERR(seqrec_model_score_candidates_with(nullptr, h.data(), h.size(), &o, cand.data(), 3,
                                               out.data()),
            IA, "model is NULL");
  seqrec_objective unknown{"no_such_knob", 1.f};
  o.objectives = &unknown;
  o.num_objectives = 1;
  std::vector<uint32_t> items(5, 9);
  std::vector<float> scores(5, 9.f);
  CHECK_ERR(seqrec_model_topk_with(m, h.data(), h.size(), &o, 5, items.data(), scores.data()), IA,
            "no_such_knob");
  seqrec_objective null_name{nullptr, 1.f};
  o.objectives = &null_name;
  CHECK_ERR(seqrec_model_topk_with(m, h.data(), h.size(), &o, 5, items.data(), scores.data()), IA,
            "objectives[0].name is NULL");
  o.objectives = nullptr;
  CHECK_ERR(seqrec_model_topk_with(m, h.data(), h.size(), &o, 5, items.data(), scores.data()), IA,
            "opts.objectives is NULL");
  o.num_objectives = 0;
  o.exclude_len = 2;
  CHECK_ERR(seqrec_model_topk_with(m, h.data(), h.size(), &o, 5, items.data(), scores.data()), IA,
            "opts.exclude is NULL");
  o.exclude_len = 0;
  CHECK_ERR(seqrec_model_topk_with(m, h.data(), h.size(), &o, 0, items.data(), scores.data()), IA,
            "k is 0");
  CHECK_ERR(seqrec_model_score_with(m, h.data(), h.size(), &o, out.data(), 3), IA, "scores_len");
  CHECK(out == std::vector<float>(3, 7.f) && items == std::vector<uint32_t>(5, 9),
        "outputs written on failure");
  std::printf("ranking: %zu cases, %d refusals\n", cases, g_errors_checked);
  return 0;
}

// ---- sessions that move -----------------------------------------------------------------

std::vector<uint8_t> save(const seqrec_session *s) {
  size_t n = 0;
  CHECK_OK(seqrec_session_save(s, nullptr, 0, &n));
  std::vector<uint8_t> buf(n);
  size_t written = 0;
  CHECK_OK(seqrec_session_save(s, buf.data(), buf.size(), &written));
  CHECK(written == n, "saved size");
  return buf;
}

int run_move(const std::string &path, const std::string &other_path) {
  Model here, there, other;
  CHECK_OK(seqrec_model_load(path.c_str(), &here.p));
  CHECK_OK(seqrec_model_load(path.c_str(), &there.p));
  CHECK_OK(seqrec_model_load(other_path.c_str(), &other.p));
  uint32_t n_items = 0, n_users = 0;
  size_t max_len = 0;
  CHECK_OK(seqrec_model_num_items(here.p, &n_items));
  CHECK_OK(seqrec_model_num_users(here.p, &n_users));
  CHECK_OK(seqrec_model_max_len(here.p, &max_len));
  Session original, moved;
  if (n_users > 0) {
    CHECK_OK(seqrec_session_new_user(here.p, 1, &original.p));
  } else {
    CHECK_OK(seqrec_session_new(here.p, &original.p));
  }
  std::vector<uint32_t> a(5), b(5);
  std::vector<float> sa(5), sb(5);
  uint32_t item = 7;
  size_t steps = 2 * max_len + 3;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < steps; ++i) {
    item = 1 + (item * 37 + 11) % (n_items - 1);
    CHECK_OK(seqrec_session_push(original.p, item));
    if (moved.p) CHECK_OK(seqrec_session_push(moved.p, item));
    // The moved session: saved and restored on the other load at every step.
    bytes = save(moved.p ? moved.p : original.p);
    Session next;
    CHECK_OK(seqrec_session_restore(there.p, bytes.data(), bytes.size(), &next.p));
    std::swap(moved.p, next.p);
    CHECK(save(original.p) == bytes, "saved bytes differ at step " + std::to_string(i));
    for (int excl = 0; excl <= 1; ++excl) {
      CHECK_OK(seqrec_session_topk(original.p, 5, excl, a.data(), sa.data()));
      CHECK_OK(seqrec_session_topk(moved.p, 5, excl, b.data(), sb.data()));
      CHECK(a == b && sa == sb, "restored session differs at step " + std::to_string(i));
    }
  }
  size_t len = 0;
  CHECK_OK(seqrec_session_len(moved.p, &len));
  CHECK(len == steps, "restored session length");

  // Refusals: nothing is written on failure.
  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT, FMT = SEQREC_ERR_FORMAT;
  seqrec_session *out = nullptr;
  CHECK_ERR(seqrec_session_restore(other.p, bytes.data(), bytes.size(), &out), IA,
            "another model");
  std::vector<uint8_t> bad = bytes;
  bad[bad.size() / 2] ^= 0x10;
  CHECK_ERR(seqrec_session_restore(there.p, bad.data(), bad.size(), &out), FMT, "checksum");
  CHECK_ERR(seqrec_session_restore(there.p, bytes.data(), bytes.size() - 1, &out), FMT,
            "session state");
  CHECK_ERR(seqrec_session_restore(there.p, bytes.data(), 3, &out), FMT, "not a saved");
  CHECK_ERR(seqrec_session_restore(there.p, nullptr, 10, &out), IA, "data is NULL");
  CHECK_ERR(seqrec_session_restore(nullptr, bytes.data(), bytes.size(), &out), IA, "NULL");
  CHECK_ERR(seqrec_session_restore(there.p, bytes.data(), bytes.size(), nullptr), IA, "NULL");
  CHECK(out == nullptr, "out written on failure");
  size_t n = 12345;
  std::vector<uint8_t> small(8, 0xAB);
  CHECK_ERR(seqrec_session_save(moved.p, small.data(), small.size(), &n), IA, "needs");
  CHECK(n == 12345 && small == std::vector<uint8_t>(8, 0xAB), "outputs written on failure");
  CHECK_ERR(seqrec_session_save(moved.p, nullptr, 8, &n), IA, "buf is NULL");
  CHECK_ERR(seqrec_session_save(moved.p, nullptr, 0, nullptr), IA, "len_out is NULL");
  CHECK_ERR(seqrec_session_save(nullptr, nullptr, 0, &n), IA, "session is NULL");
  std::printf("move: %zu steps restored, %zu bytes at the end, %d refusals\n", steps,
              bytes.size(), g_errors_checked);
  return 0;
}

// ---- online adaptation -------------------------------------------------------------------

seqrec_feedback_options read_options(std::istringstream &ls) {
  std::string lr, gamma, alpha0;
  seqrec_feedback_options o{};
  ls >> lr >> gamma >> alpha0 >> o.ramp >> o.buffer >> o.batch >> o.seed;
  o.lr = to_float(lr);
  o.gamma = to_float(gamma);
  o.alpha0 = to_float(alpha0);
  return o;
}

bool same_options(const seqrec_feedback_options &a, const seqrec_feedback_options &b) {
  return a.lr == b.lr && a.gamma == b.gamma && a.alpha0 == b.alpha0 && a.ramp == b.ramp &&
         a.buffer == b.buffer && a.batch == b.batch && a.seed == b.seed;
}

std::vector<uint8_t> save_session(const seqrec_session *s) {
  size_t len = 0;
  CHECK_OK(seqrec_session_save(s, nullptr, 0, &len));
  std::vector<uint8_t> buf(len);
  CHECK_OK(seqrec_session_save(s, buf.data(), buf.size(), &len));
  return buf;
}

int run_feedback(const std::string &path, const std::string &plain_path,
                 const std::string &expected_path) {
  std::ifstream in(expected_path);
  CHECK(in.good(), "cannot open " + expected_path);
  Model model, plain;
  CHECK_OK(seqrec_model_load(path.c_str(), &model.p));
  CHECK_OK(seqrec_model_load(plain_path.c_str(), &plain.p));
  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT, OOR = SEQREC_ERR_OUT_OF_RANGE,
                      UNS = SEQREC_ERR_UNSUPPORTED;
  Session s, moved;
  CHECK_OK(seqrec_session_new(model.p, &s.p));
  CHECK_ERR(seqrec_session_feedback(s.p, 1, 1.f), IA, "empty history");
  std::vector<uint32_t> items(10), moved_items(10);
  std::vector<float> scores(10), moved_scores(10);
  std::string line;
  size_t calls = 0, lists = 0;
  seqrec_feedback_options set{};
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string tag;
    ls >> tag;
    if (tag == "options") {
      seqrec_feedback_options want = read_options(ls), got{};
      CHECK_OK(seqrec_session_feedback_options(s.p, &got));
      CHECK(same_options(got, want), "the session's feedback options");
    } else if (tag == "set") {
      set = read_options(ls);
      CHECK_OK(seqrec_session_set_feedback_options(s.p, &set));
    } else if (tag == "push" || tag == "feedback") {
      uint32_t item = 0;
      std::string reward;
      ls >> item >> reward;
      for (seqrec_session *p : {s.p, moved.p}) {
        if (p == nullptr) continue;
        if (tag == "push") {
          CHECK_OK(seqrec_session_push(p, item));
        } else {
          CHECK_OK(seqrec_session_feedback(p, item, to_float(reward)));
        }
      }
      calls += tag == "feedback";
    } else if (tag == "save") {
      std::vector<uint8_t> state = save_session(s.p);
      CHECK_OK(seqrec_session_restore(model.p, state.data(), state.size(), &moved.p));
      CHECK(save_session(moved.p) == state, "restored state saves to the same bytes");
    } else if (tag == "topk") {
      expect_session_topk(s.p, 1, ls, items, scores,
                          path + " after " + std::to_string(calls) + " feedback calls");
      if (moved.p != nullptr) {
        CHECK_OK(seqrec_session_topk(moved.p, 10, 1, moved_items.data(), moved_scores.data()));
        CHECK(moved_items == items && moved_scores == scores,
              "the restored session continues identically");
      }
      ++lists;
    }
  }
  CHECK(calls > 0 && lists > 0 && moved.p != nullptr, "EXPECTED drives feedback and a move");

  // Refusals leave the session as it was.
  std::vector<uint8_t> before = save_session(s.p);
  uint32_t n = 0;
  CHECK_OK(seqrec_model_num_items(model.p, &n));
  CHECK_ERR(seqrec_session_feedback(s.p, 0, 1.f), OOR, "item id 0");
  CHECK_ERR(seqrec_session_feedback(s.p, n, 1.f), OOR, "item id " + std::to_string(n));
  CHECK_ERR(seqrec_session_feedback(s.p, 1, NAN), IA, "not finite");
  CHECK_ERR(seqrec_session_feedback(nullptr, 1, 1.f), IA, "session is NULL");
  seqrec_feedback_options bad = set;
  bad.batch = 0;
  CHECK_ERR(seqrec_session_set_feedback_options(s.p, &bad), IA, "batch is 0");
  bad = set;
  bad.seed += 1;
  CHECK_ERR(seqrec_session_set_feedback_options(s.p, &bad), IA, "fixed once");
  CHECK_ERR(seqrec_session_set_feedback_options(s.p, nullptr), IA, "options is NULL");
  CHECK_ERR(seqrec_session_feedback_options(s.p, nullptr), IA, "out is NULL");
  CHECK(save_session(s.p) == before, "a refused call changed the session");

  // A model without an actor-critic head.
  Session p;
  CHECK_OK(seqrec_session_new(plain.p, &p.p));
  CHECK_OK(seqrec_session_push(p.p, 1));
  std::vector<uint8_t> plain_before = save_session(p.p);
  seqrec_feedback_options got{};
  CHECK_ERR(seqrec_session_feedback(p.p, 2, 1.f), UNS, "actor-critic head");
  CHECK_ERR(seqrec_session_set_feedback_options(p.p, &set), UNS, "actor-critic head");
  CHECK_ERR(seqrec_session_feedback_options(p.p, &got), UNS, "actor-critic head");
  CHECK(save_session(p.p) == plain_before, "a refused call changed the plain session");
  std::printf("feedback: %zu calls, %zu top-k lists, %d refusals\n", calls, lists,
              g_errors_checked);
  return 0;
}

// ---- the text encoder ---------------------------------------------------------------------

int run_text(const std::string &dir, const std::string &expected_path) {
  std::ifstream in(expected_path);
  CHECK(in.good(), "cannot open " + expected_path);
  size_t dim = 0, n = 0;
  in >> dim >> n;
  std::string line;
  std::getline(in, line);
  std::vector<std::string> texts(n);
  for (auto &t : texts) std::getline(in, t);
  std::vector<float> want(n * dim);
  std::string tok;
  for (auto &x : want) {
    in >> tok;
    x = to_float(tok);
  }
  seqrec_text_encoder *enc = nullptr;
  CHECK_OK(seqrec_text_encoder_load(dir.c_str(), &enc));
  size_t got_dim = 0;
  CHECK_OK(seqrec_text_encoder_dim(enc, &got_dim));
  CHECK(got_dim == dim, "dim " + std::to_string(got_dim));
  std::vector<const char *> ptrs;
  for (auto &t : texts) ptrs.push_back(t.c_str());
  std::vector<float> out(n * dim + 3, 42.f);
  CHECK_OK(seqrec_text_encoder_encode(enc, ptrs.data(), n, out.data(), out.size()));
  for (size_t i = 0; i < n * dim; ++i)
    CHECK(std::fabs(out[i] - want[i]) <= 1e-6f,
          "embedding value " + std::to_string(i) + ": " + std::to_string(out[i]) + " vs " +
              std::to_string(want[i]));
  CHECK(out[n * dim] == 42.f, "wrote past n_texts * dim");

  const seqrec_status IA = SEQREC_ERR_INVALID_ARGUMENT;
  std::vector<float> small(dim, 5.f);
  const char *empty[] = {"Toy Story", ""};
  CHECK_ERR(seqrec_text_encoder_encode(enc, empty, 2, out.data(), out.size()), IA, "text 1");
  const char *null_text[] = {nullptr};
  CHECK_ERR(seqrec_text_encoder_encode(enc, null_text, 1, out.data(), out.size()), IA,
            "texts[0] is NULL");
  CHECK_ERR(seqrec_text_encoder_encode(enc, ptrs.data(), n, small.data(), small.size()), IA,
            "out_len");
  CHECK(small == std::vector<float>(dim, 5.f), "output written on failure");
  CHECK_ERR(seqrec_text_encoder_encode(enc, ptrs.data(), 0, out.data(), out.size()), IA,
            "n_texts is 0");
  CHECK_ERR(seqrec_text_encoder_encode(nullptr, ptrs.data(), n, out.data(), out.size()), IA,
            "encoder is NULL");
  seqrec_text_encoder *none = nullptr;
  CHECK_ERR(seqrec_text_encoder_load("/nonexistent/seqrec-text", &none), SEQREC_ERR_FORMAT,
            "config.json is missing");
  CHECK_ERR(seqrec_text_encoder_load(nullptr, &none), IA, "dir is NULL");
  CHECK(none == nullptr, "out written on failure");
  seqrec_text_encoder_free(enc);
  seqrec_text_encoder_free(nullptr);
  std::printf("text: %zu texts of %zu values, %d refusals\n", n, dim, g_errors_checked);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  std::printf("seqrec %s\n", seqrec_version());
  if (mode == "check" && argc == 4) return run_check(argv[2], argv[3]);
  if (mode == "errors" && argc == 4) return run_errors(argv[2], argv[3]);
  if (mode == "mutants") return run_mutants(argc, argv);
  if (mode == "knobs" && argc == 4) return run_knobs(argv[2], argv[3]);
  if (mode == "pdit" && argc == 6) return run_pdit(argv[2], argv[3], argv[4], argv[5]);
  if (mode == "ranking" && argc == 4) return run_ranking(argv[2], argv[3]);
  if (mode == "move" && argc == 4) return run_move(argv[2], argv[3]);
  if (mode == "text" && argc == 4) return run_text(argv[2], argv[3]);
  if (mode == "feedback" && argc == 5) return run_feedback(argv[2], argv[3], argv[4]);
  std::fprintf(stderr,
               "usage: client check MODEL EXPECTED | errors MODEL CASER | mutants FILE... | "
               "knobs MODEL EXPECTED | pdit MODEL CATALOG BAD_CATALOG EXPECTED | "
               "ranking MODEL EXPECTED | move MODEL OTHER | text DIR EXPECTED | "
               "feedback MODEL PLAIN EXPECTED\n");
  return 2;
}
