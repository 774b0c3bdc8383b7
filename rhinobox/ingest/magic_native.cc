// Whether a soft-magic test that can print a MIME type may match a buffer: magic_gates' filter, compiled.
//
// The checks are data, built by rhinobox/ingest/magic_native.py from the machine's magic database at
// start-up: RE2 sets, literals to find, bytes at fixed offsets, number comparisons, and the trees of
// records on the way to each MIME type. The Python filter is the reference; this one answers the same,
// or "ask Python" for the few conditions it does not model (regexes inside a test). Loaded with
// ctypes.PyDLL: a call keeps the GIL (a few microseconds; letting go of it costs a worker more).
// No CPython API is used.

#include <re2/re2.h>
#include <re2/set.h>

#ifdef RHINOBOX_HYPERSCAN
#include <hs/hs.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "magic_plain.h"

namespace {

enum Answer : int { kNo = 0, kYes = 1, kDeferred = 2, kAskPython = 3 };
enum Tri { kFalse, kTrue, kUnknown };

// What a condition checks; the numbers are magic_native.py's ConditionKind.
enum Kind : int {
  kAlways = 0,     // may hold (not modelled, or nothing to check)
  kNever = 1,      // never holds
  kPythonOnly = 2, // modelled in Python only: unknown here
  kFixed = 3,      // bytes at an offset, zero-padded past the end, masked or case-folded
  kRelation = 4,   // a number compared by < > ! & ^
  kModulo = 5,     // a number's remainder
  kUtf16 = 6,      // a byte at an offset (past the end: may hold)
  kGuid = 7,       // 16 bytes at an offset (past the end: may hold)
  kLiterals = 8,   // one of some literals anywhere in the buffer
  kRegex = 9,      // an RE2 search over data[offset:offset + value]
  kNotCertain = 10,  // libmagic surely finds no match of a regex (magic_regex.regex_certain, negated)
};

inline unsigned char ascii_lower(unsigned char c) {
  return static_cast<unsigned char>(c + (static_cast<unsigned char>(c - 'A') < 26u ? 'a' - 'A' : 0));
}

struct Buffer {
  const unsigned char* data;
  size_t size;

  unsigned char at(uint64_t offset) const { return offset < size ? data[offset] : 0; }
  bool holds(uint64_t offset, uint64_t width) const { return offset <= size && width <= size - offset; }
};

struct Condition {
  int kind = kAlways;
  uint64_t offset = 0;
  int width = 0;
  bool little = false;
  bool has_mask = false;
  uint64_t mask = 0;
  uint64_t sign_bit = 0;
  int op = 0;
  uint64_t value = 0;  // relation: the value (two's complement when signed); modulo: the modulus
  uint64_t expected = 0;
  bool fold = false;
  std::string bytes;
  std::vector<std::string> literals;
  std::unique_ptr<RE2> regex;           // a line-start regex: anchored at the region's start
  std::unique_ptr<RE2> after_newline;   // and the same after a newline (op 1: at a line start)
};

RE2::Options filter_options() {
  RE2::Options options;
  options.set_encoding(RE2::Options::EncodingLatin1);  // bytes as bytes, not UTF-8
  options.set_never_capture(true);
  options.set_dot_nl(true);
  options.set_max_mem(64 << 20);
  options.set_log_errors(false);
  return options;
}

uint64_t read_number(const Buffer& buffer, uint64_t offset, int width, bool little) {
  uint64_t number = 0;
  for (int i = 0; i < width; ++i) {
    const uint64_t byte = buffer.data[offset + (little ? width - 1 - i : i)];
    number = (number << 8) | byte;
  }
  return number;
}

bool fixed_holds(const Condition& c, const Buffer& buffer) {
  const size_t n = c.bytes.size();
  if (c.has_mask) {  // a number of at most 8 bytes, read big-endian as magic_fixed does
    uint64_t chunk = 0;
    uint64_t expected = 0;
    for (size_t i = 0; i < n; ++i) {
      chunk = (chunk << 8) | buffer.at(c.offset + i);
      expected = (expected << 8) | static_cast<unsigned char>(c.bytes[i]);
    }
    return (chunk & c.mask) == expected;
  }
  for (size_t i = 0; i < n; ++i) {
    unsigned char byte = buffer.at(c.offset + i);
    if (c.fold) byte = ascii_lower(byte);
    if (byte != static_cast<unsigned char>(c.bytes[i])) return false;
  }
  return true;
}

bool relation_holds(const Condition& c, const Buffer& buffer) {
  if (!buffer.holds(c.offset, c.width)) return true;  // reading past the end is not modelled
  uint64_t number = read_number(buffer, c.offset, c.width, c.little);
  if (c.has_mask) number &= c.mask;
  if (number & c.sign_bit) number -= c.sign_bit << 1;  // sign-extended to 64 bits (two's complement)
  if (c.op == '&') return (number & c.value) == c.value;
  if (c.op == '^') return (number & c.value) != c.value;
  if (c.op == '!') return number != c.value;
  if (c.sign_bit) {
    const int64_t left = static_cast<int64_t>(number);
    const int64_t right = static_cast<int64_t>(c.value);
    return c.op == '<' ? left < right : left > right;
  }
  return c.op == '<' ? number < c.value : number > c.value;
}

bool is_letter(unsigned char byte) { return static_cast<unsigned char>((byte | 0x20) - 'a') < 26u; }

// How often a byte is met in text (lower: rarer); a folded letter is never chosen while another is there.
int commonness(unsigned char byte, bool fold) {
  if (fold && is_letter(byte)) return 4;
  if ((byte >= 'a' && byte <= 'z') || byte == ' ') return 3;
  if ((byte >= 'A' && byte <= 'Z') || (byte >= '0' && byte <= '9') || byte == '\n' || byte == 0 || byte == 0xff) return 2;
  return 1;
}

// Whether `needle` is in data[start:end) (ASCII case folded when `fold`: the needle comes lowered), as
// memmem answers. memchr finds its rarest byte, then the rest is compared: a few times faster than
// memmem on a 4 KiB buffer, and no lowered copy of the buffer is made.
bool contains(const Buffer& buffer, size_t start, size_t end, const std::string& needle, bool fold) {
  if (end > buffer.size) end = buffer.size;
  const size_t n = needle.size();
  if (start > end || n > end - start) return false;
  if (n == 0) return true;
  const unsigned char* wanted = reinterpret_cast<const unsigned char*>(needle.data());
  size_t anchor = 0;
  for (size_t i = 1; i < n; ++i) {
    if (commonness(wanted[i], fold) < commonness(wanted[anchor], fold)) anchor = i;
  }
  const unsigned char key = wanted[anchor];
  const bool both_cases = fold && is_letter(key);
  const size_t last = end - n;  // the last place the needle may start
  for (size_t from = start; from <= last;) {
    size_t place;  // where the needle would start, its anchor byte found
    if (both_cases) {
      place = from;
      while (place <= last && ascii_lower(buffer.data[place + anchor]) != key) ++place;
      if (place > last) return false;
    } else {
      const void* hit = std::memchr(buffer.data + from + anchor, key, last - from + 1);
      if (hit == nullptr) return false;
      place = static_cast<size_t>(static_cast<const unsigned char*>(hit) - buffer.data) - anchor;
    }
    const unsigned char* here = buffer.data + place;
    size_t i = 0;
    if (fold) {
      while (i < n && ascii_lower(here[i]) == wanted[i]) ++i;
    } else {
      i = std::memcmp(here, wanted, n) == 0 ? n : 0;
    }
    if (i == n) return true;
    from = place + 1;
  }
  return false;
}

bool search(const Condition& c, const Buffer& buffer, size_t start, size_t end) {
  const re2::StringPiece region(reinterpret_cast<const char*>(buffer.data + start), end - start);
  if (!c.after_newline) return RE2::PartialMatch(region, *c.regex);
  return c.regex->Match(region, 0, region.size(), RE2::ANCHOR_START, nullptr, 0) ||
         RE2::PartialMatch(region, *c.after_newline);
}

// Where `byte` first is in [start, end), or `end`.
size_t find_byte(const Buffer& buffer, unsigned char byte, size_t start, size_t end) {
  if (start >= end) return end;
  const void* found = std::memchr(buffer.data + start, byte, end - start);
  return found == nullptr ? end : static_cast<size_t>(static_cast<const unsigned char*>(found) - buffer.data);
}

// magic_regex.regex_certain: a match inside the part of libmagic's region it surely reads.
bool certain_holds(const Condition& c, const Buffer& buffer) {
  const size_t offset = c.offset;
  if (offset >= buffer.size) return false;
  const size_t end = std::min<uint64_t>(buffer.size, offset + c.value);  // the region ends here at most
  size_t stop = end - 1;                                                    // less its last byte
  const size_t first = find_byte(buffer, '\n', offset, stop);
  if (first < stop && first > offset && find_byte(buffer, 0, offset, first) == first &&
      search(c, buffer, offset, first)) {
    return true;  // in the first line, which libmagic's region always holds
  }
  if (c.width > 0) {  // a line count
    size_t newlines = 0;
    size_t kept_end = stop;
    for (size_t at = find_byte(buffer, '\n', offset, stop); at < stop; at = find_byte(buffer, '\n', at + 1, stop)) {
      if (++newlines == static_cast<size_t>(c.width)) {
        kept_end = at;
        break;
      }
    }
    if (newlines == 0 && find_byte(buffer, '\r', offset, end) < end) return false;  // lines by carriage returns
    if (newlines > 0 && newlines < static_cast<size_t>(c.width)) {
      // Fewer newlines than counted: the last one found.
      for (size_t at = offset; (at = find_byte(buffer, '\n', at, stop)) < stop; ++at) kept_end = at;
    }
    if (newlines > 0) stop = kept_end;
  }
  stop = find_byte(buffer, 0, offset, stop);  // regexec stops at a NUL
  if (stop <= offset) return false;
  return search(c, buffer, offset, stop);
}

Tri check(const Condition& c, const Buffer& buffer) {
  switch (c.kind) {
    case kAlways:
      return kTrue;
    case kNever:
      return kFalse;
    case kFixed:
      return fixed_holds(c, buffer) ? kTrue : kFalse;
    case kRelation:
      return relation_holds(c, buffer) ? kTrue : kFalse;
    case kModulo:
      if (!buffer.holds(c.offset, c.width)) return kTrue;
      return read_number(buffer, c.offset, c.width, c.little) % c.value == c.expected ? kTrue : kFalse;
    case kUtf16:
      if (c.offset >= buffer.size) return kTrue;
      return buffer.data[c.offset] == static_cast<unsigned char>(c.bytes[0]) ? kTrue : kFalse;
    case kGuid:
      if (!buffer.holds(c.offset, c.bytes.size())) return kTrue;
      return std::memcmp(buffer.data + c.offset, c.bytes.data(), c.bytes.size()) == 0 ? kTrue : kFalse;
    case kRegex: {
      const size_t start = std::min<uint64_t>(c.offset, buffer.size);  // past the end: an empty region
      const size_t span = std::min<uint64_t>(c.value, buffer.size - start);
      return search(c, buffer, start, start + span) ? kTrue : kFalse;
    }
    case kNotCertain:
      return certain_holds(c, buffer) ? kFalse : kTrue;
    case kLiterals:
      for (const std::string& literal : c.literals) {
        if (contains(buffer, 0, buffer.size, literal, c.fold)) {
          return kTrue;
        }
      }
      return kFalse;
    default:
      return kUnknown;
  }
}

struct Node {
  int condition;
  bool prints;
  std::vector<int> below;
};

#ifdef RHINOBOX_HYPERSCAN
// Each thread's Hyperscan scratch space, grown for every database it scans (by serial number: an
// address may be reused by a later database).
class Scratch {
 public:
  ~Scratch() {
    if (scratch_ != nullptr) hs_free_scratch(scratch_);
  }
  hs_scratch_t* for_database(const hs_database_t* database, uint64_t serial) {
    if (std::find(ready_.begin(), ready_.end(), serial) == ready_.end()) {
      if (hs_alloc_scratch(database, &scratch_) != HS_SUCCESS) return nullptr;
      ready_.push_back(serial);
    }
    return scratch_;
  }

 private:
  hs_scratch_t* scratch_ = nullptr;
  std::vector<uint64_t> ready_;
};

std::atomic<uint64_t> next_serial{1};

struct FreeDatabase {
  void operator()(hs_database_t* database) const { hs_free_database(database); }
};
#endif

// Patterns searched together, each standing for some tests. Hyperscan (when built with it) takes the
// patterns it can read, for a scan that skips ahead on literals; RE2 the rest, or all without it.
struct MatchSet {
  bool anchored = false;
  bool compiled = false;
  std::vector<std::string> patterns;
  std::vector<std::vector<int>> tests;  // by pattern number
  std::unique_ptr<RE2::Set> set;
  std::vector<int> set_numbers;  // RE2's number of a pattern -> its number here
#ifdef RHINOBOX_HYPERSCAN
  std::unique_ptr<hs_database_t, FreeDatabase> hyperscan;
  uint64_t serial = 0;
#endif

  bool compile();
};

#ifdef RHINOBOX_HYPERSCAN
constexpr unsigned kHyperscanFlags = HS_FLAG_DOTALL | HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;

// The patterns Hyperscan compiles together; those it refuses are left in `rest`.
std::unique_ptr<hs_database_t, FreeDatabase> hyperscan_database(const MatchSet& set, std::vector<int>& rest) {
  std::vector<int> numbers;
  for (size_t i = 0; i < set.patterns.size(); ++i) {
    if (set.patterns[i].find('\0') == std::string::npos) {
      numbers.push_back(static_cast<int>(i));
    } else {
      rest.push_back(static_cast<int>(i));  // a C string cannot hold it
    }
  }
  while (!numbers.empty()) {
    std::vector<std::string> expressions;
    std::vector<const char*> pointers;
    for (const int number : numbers) {
      expressions.push_back(set.patterns[number]);
    }
    for (const std::string& expression : expressions) pointers.push_back(expression.c_str());
    const std::vector<unsigned> flags(numbers.size(), kHyperscanFlags);
    std::vector<unsigned> ids(numbers.begin(), numbers.end());
    hs_database_t* database = nullptr;
    hs_compile_error_t* error = nullptr;
    const hs_error_t made = hs_compile_multi(pointers.data(), flags.data(), ids.data(),
                                             static_cast<unsigned>(numbers.size()), HS_MODE_BLOCK, nullptr, &database,
                                             &error);
    if (made == HS_SUCCESS) return std::unique_ptr<hs_database_t, FreeDatabase>(database);
    const int refused = error != nullptr ? error->expression : -1;
    hs_free_compile_error(error);
    if (refused < 0 || static_cast<size_t>(refused) >= numbers.size()) {
      rest.insert(rest.end(), numbers.begin(), numbers.end());  // not one pattern's fault: RE2 takes all
      return nullptr;
    }
    rest.push_back(numbers[refused]);
    numbers.erase(numbers.begin() + refused);
  }
  return nullptr;
}

int on_hyperscan_match(unsigned int id, unsigned long long, unsigned long long, unsigned int, void* context);
#endif

bool MatchSet::compile() {
  std::vector<int> rest;
#ifdef RHINOBOX_HYPERSCAN
  if (!anchored) {  // an anchored set stops a few bytes in with RE2 already; Hyperscan compiles it slowly
    hyperscan = hyperscan_database(*this, rest);
    serial = next_serial.fetch_add(1);
  } else {
    for (size_t i = 0; i < patterns.size(); ++i) rest.push_back(static_cast<int>(i));
  }
#else
  for (size_t i = 0; i < patterns.size(); ++i) rest.push_back(static_cast<int>(i));
#endif
  std::sort(rest.begin(), rest.end());
  if (!rest.empty()) {
    set = std::make_unique<RE2::Set>(filter_options(), anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
    for (const int number : rest) {
      if (set->Add(patterns[number], nullptr) < 0) return false;
      set_numbers.push_back(number);
    }
    if (!set->Compile()) return false;
  }
  compiled = true;
  return true;
}

struct Find {
  std::string literal;
  bool fold;
  uint64_t start;
  uint64_t end;  // UINT64_MAX: to the end
  std::vector<int> tests;
};

struct Standing {
  int test;
  int condition;
};

struct Table {
  uint64_t offset;
  std::array<std::vector<Standing>, 256> by_byte;
};

// One of libmagic's passes (binary or text): what is checked besides its RE2 sets.
struct Group {
  std::vector<MatchSet> sets;
  std::vector<Find> finds;
  std::vector<Table> tables;
  std::vector<Standing> relations;
};

class Candidates {
 public:
  explicit Candidates(size_t count) : seen_(count, 0) {}
  void add(int test) {
    if (test >= 0 && static_cast<size_t>(test) < seen_.size() && !seen_[test]) {
      seen_[test] = 1;
      list_.push_back(test);
    }
  }
  const std::vector<int>& list() const { return list_; }

 private:
  std::vector<char> seen_;
  std::vector<int> list_;
};

struct Filter {
  explicit Filter(size_t count) : roots(count, -1), text_only(count, 0) {}

  std::vector<Condition> conditions;
  std::vector<Node> nodes;
  std::vector<int> roots;  // by test: its gate's root node, -1: no gate (may print)
  std::vector<char> text_only;
  std::vector<int> always;
  std::array<Group, 2> groups;     // binary, text
  std::vector<MatchSet> text_sets;  // both groups' patterns, for text

  bool candidates(const Buffer& buffer, bool text, Candidates& found) const;
  bool match(const MatchSet& matcher, const Buffer& buffer, Candidates& found) const;
  void besides_sets(const Group& group, const Buffer& buffer, Candidates& found) const;
  Tri may_print(int node, const Buffer& buffer) const;
};

// The tests that may match (false: RE2 gave up, the Python filter decides).
bool Filter::candidates(const Buffer& buffer, bool text, Candidates& found) const {
  for (const int test : always) found.add(test);
  const Group& binary = groups[0];
  if (text) {
    if (text_sets.empty()) return false;  // never built: the Python filter decides
    for (const MatchSet& matcher : text_sets) {
      if (!match(matcher, buffer, found)) return false;
    }
    besides_sets(binary, buffer, found);
    besides_sets(groups[1], buffer, found);
    return true;
  }
  for (const MatchSet& matcher : binary.sets) {
    if (!match(matcher, buffer, found)) return false;
  }
  besides_sets(binary, buffer, found);
  return true;
}

#ifdef RHINOBOX_HYPERSCAN
struct HyperscanMatches {
  const MatchSet* set;
  Candidates* found;
};

int on_hyperscan_match(unsigned int id, unsigned long long, unsigned long long, unsigned int, void* context) {
  const HyperscanMatches* matches = static_cast<const HyperscanMatches*>(context);
  for (const int test : matches->set->tests[id]) matches->found->add(test);
  return 0;  // go on: every pattern that matches counts
}
#endif

bool Filter::match(const MatchSet& matcher, const Buffer& buffer, Candidates& found) const {
  if (!matcher.compiled) return false;  // never built: the Python filter decides
#ifdef RHINOBOX_HYPERSCAN
  if (matcher.hyperscan) {
    if (buffer.size > UINT32_MAX) return false;  // Hyperscan takes 32-bit lengths: the Python filter decides
    thread_local Scratch scratch;
    hs_scratch_t* space = scratch.for_database(matcher.hyperscan.get(), matcher.serial);
    HyperscanMatches matches{&matcher, &found};
    if (space == nullptr || hs_scan(matcher.hyperscan.get(), reinterpret_cast<const char*>(buffer.data),
                                    static_cast<unsigned>(buffer.size), 0, space, on_hyperscan_match,
                                    &matches) != HS_SUCCESS) {
      return false;
    }
  }
#endif
  if (!matcher.set) return true;
  std::vector<int> matched;
  RE2::Set::ErrorInfo error{};
  const re2::StringPiece text(reinterpret_cast<const char*>(buffer.data), buffer.size);
  if (!matcher.set->Match(text, &matched, &error) && error.kind != RE2::Set::kNoError) {
    return false;  // out of memory, say: the Python filter decides
  }
  for (const int pattern : matched) {
    for (const int test : matcher.tests[matcher.set_numbers[pattern]]) found.add(test);
  }
  return true;
}

void Filter::besides_sets(const Group& group, const Buffer& buffer, Candidates& found) const {
  for (const Find& find : group.finds) {
    const size_t end = find.end == UINT64_MAX ? buffer.size : find.end;
    const bool hit = contains(buffer, find.start, end, find.literal, find.fold);
    if (hit) {
      for (const int test : find.tests) found.add(test);
    }
  }
  for (const Table& table : group.tables) {
    for (const Standing& standing : table.by_byte[buffer.at(table.offset)]) {
      if (fixed_holds(conditions[standing.condition], buffer)) found.add(standing.test);
    }
  }
  for (const Standing& relation : group.relations) {
    if (relation_holds(conditions[relation.condition], buffer)) found.add(relation.test);
  }
}

Tri Filter::may_print(int index, const Buffer& buffer) const {
  const Node& node = nodes[index];
  const Tri holds = node.condition < 0 ? kTrue : check(conditions[node.condition], buffer);
  if (holds == kFalse || node.prints) return holds;
  Tri below = kFalse;
  for (const int child : node.below) {
    const Tri answer = may_print(child, buffer);
    if (answer == kTrue) return holds;
    if (answer == kUnknown) below = kUnknown;
  }
  return below;
}

Group* group_of(Filter* filter, int group) {
  return group == 0 || group == 1 ? &filter->groups[group] : nullptr;
}

std::vector<MatchSet>* sets_of(Filter* filter, int group) {
  if (group == 2) return &filter->text_sets;
  Group* owner = group_of(filter, group);
  return owner == nullptr ? nullptr : &owner->sets;
}

MatchSet* set_of(Filter* filter, int group, int set) {
  std::vector<MatchSet>* sets = sets_of(filter, group);
  if (sets == nullptr || set < 0 || static_cast<size_t>(set) >= sets->size()) return nullptr;
  return &(*sets)[set];
}

bool known_test(const Filter* filter, int test) {
  return test >= 0 && static_cast<size_t>(test) < filter->roots.size();
}

bool known_condition(const Filter* filter, int condition) {
  return condition >= 0 && static_cast<size_t>(condition) < filter->conditions.size();
}

}  // namespace

// Building a filter: every call checks its numbers and answers -1 (or does nothing) when one is wrong.
// Built with -fvisibility=hidden: only these functions are exported.
#pragma GCC visibility push(default)
extern "C" {

void* rb_filter_new(int test_count) { return new Filter(static_cast<size_t>(test_count)); }

void rb_filter_free(void* filter) { delete static_cast<Filter*>(filter); }

int rb_condition(void* handle, int kind, uint64_t offset, int width, int little, int has_mask, uint64_t mask,
                 uint64_t sign_bit, int op, uint64_t value, uint64_t expected, int fold, const char* bytes,
                 size_t size) {
  Filter* filter = static_cast<Filter*>(handle);
  Condition c;
  c.kind = kind;
  c.offset = offset;
  c.width = width;
  c.little = little != 0;
  c.has_mask = has_mask != 0;
  c.mask = mask;
  c.sign_bit = sign_bit;
  c.op = op;
  c.value = value;
  c.expected = expected;
  c.fold = fold != 0;
  c.bytes.assign(bytes, size);
  if ((kind == kModulo && value == 0) || (kind == kUtf16 && size == 0) || (c.has_mask && size > 8)) return -1;
  if (kind == kRegex || kind == kNotCertain) {
    c.regex = std::make_unique<RE2>(re2::StringPiece(bytes, size), filter_options());
    if (!c.regex->ok()) return -1;
    if (op == 1) {
      c.after_newline = std::make_unique<RE2>("\\n" + std::string(bytes, size), filter_options());
      if (!c.after_newline->ok()) return -1;
    }
  }
  filter->conditions.push_back(std::move(c));
  return static_cast<int>(filter->conditions.size() - 1);
}

int rb_condition_literal(void* handle, int condition, const char* bytes, size_t size) {
  Filter* filter = static_cast<Filter*>(handle);
  if (!known_condition(filter, condition)) return -1;
  filter->conditions[condition].literals.emplace_back(bytes, size);
  return 0;
}

int rb_node(void* handle, int condition, int prints) {
  Filter* filter = static_cast<Filter*>(handle);
  if (condition != -1 && !known_condition(filter, condition)) return -1;
  filter->nodes.push_back(Node{condition, prints != 0, {}});
  return static_cast<int>(filter->nodes.size() - 1);
}

int rb_node_below(void* handle, int node, int below) {
  Filter* filter = static_cast<Filter*>(handle);
  const size_t count = filter->nodes.size();
  if (node < 0 || below <= node || static_cast<size_t>(below) >= count) return -1;  // made after it: no cycle
  filter->nodes[node].below.push_back(below);
  return 0;
}

int rb_gate(void* handle, int test, int node) {
  Filter* filter = static_cast<Filter*>(handle);
  if (!known_test(filter, test) || node < 0 || static_cast<size_t>(node) >= filter->nodes.size()) return -1;
  filter->roots[test] = node;
  return 0;
}

int rb_always(void* handle, int test) {
  Filter* filter = static_cast<Filter*>(handle);
  if (!known_test(filter, test)) return -1;
  filter->always.push_back(test);
  return 0;
}

int rb_text_only(void* handle, int test) {
  Filter* filter = static_cast<Filter*>(handle);
  if (!known_test(filter, test)) return -1;
  filter->text_only[test] = 1;
  return 0;
}

// A new set of a group (0 binary, 1 text; 2: the sets searched on text); its number, or -1.
int rb_set(void* handle, int group, int anchored) {
  std::vector<MatchSet>* sets = sets_of(static_cast<Filter*>(handle), group);
  if (sets == nullptr) return -1;
  sets->emplace_back();
  sets->back().anchored = anchored != 0;
  return static_cast<int>(sets->size() - 1);
}

int rb_set_add(void* handle, int group, int set, const char* pattern, size_t size, const int* tests, size_t count) {
  MatchSet* matcher = set_of(static_cast<Filter*>(handle), group, set);
  if (matcher == nullptr || matcher->compiled) return -1;
  matcher->patterns.emplace_back(pattern, size);
  matcher->tests.emplace_back(tests, tests + count);
  return 0;
}

int rb_set_compile(void* handle, int group, int set) {
  MatchSet* matcher = set_of(static_cast<Filter*>(handle), group, set);
  return matcher != nullptr && !matcher->compiled && matcher->compile() ? 0 : -1;
}

// Whether this build searches with Hyperscan.
int rb_hyperscan() {
#ifdef RHINOBOX_HYPERSCAN
  return 1;
#else
  return 0;
#endif
}

void rb_find(void* handle, int group, const char* literal, size_t size, int fold, uint64_t start, uint64_t end,
             const int* tests, size_t count) {
  Group* owner = group_of(static_cast<Filter*>(handle), group);
  if (owner == nullptr) return;
  owner->finds.push_back(Find{std::string(literal, size), fold != 0, start, end, std::vector<int>(tests, tests + count)});
}

// A fixed-bytes test of a group, standing when the byte at its condition's offset is one of `first`.
void rb_fixed(void* handle, int group, int test, int condition, const unsigned char* first, size_t count) {
  Filter* filter = static_cast<Filter*>(handle);
  Group* owner = group_of(filter, group);
  if (owner == nullptr || !known_condition(filter, condition) || filter->conditions[condition].kind != kFixed) return;
  const uint64_t offset = filter->conditions[condition].offset;
  Table* table = nullptr;
  for (Table& existing : owner->tables) {
    if (existing.offset == offset) table = &existing;
  }
  if (table == nullptr) {
    owner->tables.push_back(Table{offset, {}});
    table = &owner->tables.back();
  }
  for (size_t i = 0; i < count; ++i) table->by_byte[first[i]].push_back(Standing{test, condition});
}

void rb_relation(void* handle, int group, int test, int condition) {
  Filter* filter = static_cast<Filter*>(handle);
  Group* owner = group_of(filter, group);
  if (owner != nullptr && known_condition(filter, condition) && filter->conditions[condition].kind == kRelation) {
    owner->relations.push_back(Standing{test, condition});
  }
}

// kNo: no test may print; kYes: one may; kDeferred: none surely may, but the tests in `deferred`
// (`*count` of them) reach a condition modelled in Python only; kAskPython: the Python filter decides.
int rb_may_print(void* handle, const unsigned char* data, size_t size, int text, int* deferred, size_t capacity,
                 size_t* count) {
  const Filter* filter = static_cast<const Filter*>(handle);
  const Buffer buffer{data, size};
  Candidates found(filter->roots.size());
  if (!filter->candidates(buffer, text != 0, found)) return kAskPython;
  *count = 0;
  for (const int test : found.list()) {
    if (!text && filter->text_only[test]) continue;
    const int root = filter->roots[test];
    if (root < 0) return kYes;
    const Tri answer = filter->may_print(root, buffer);
    if (answer == kTrue) return kYes;
    if (answer == kUnknown) {
      if (*count == capacity) return kAskPython;
      deferred[(*count)++] = test;
    }
  }
  return *count ? kDeferred : kNo;
}

// The first look at a document typed in one pass (sniff.py): kPlainText, kPlainBytes: no soft-magic
// test may print and libmagic's built-in tests answer plainly (magic_plain); kMayPrint: a soft-magic test
// may print, or libmagic's text tests read a converted copy; kBuiltin: none may print, the built-in
// tests must tell; kLookAgain: a test was deferred or RE2 gave up, the Python side looks again.
int rb_first_look(void* handle, const unsigned char* data, size_t size) {
  enum Look : int { kMayPrint = 0, kPlainText = 1, kPlainBytes = 2, kBuiltin = 3, kLookAgain = 4 };
  using rhinobox_plain::Plain;
  using rhinobox_plain::TextPass;
  const TextPass pass = rhinobox_plain::text_pass(data, size);
  if (pass == TextPass::kConverted) return kMayPrint;
  constexpr size_t kCapacity = 64;
  int deferred[kCapacity];
  size_t count = 0;
  const int answer = rb_may_print(handle, data, size, pass == TextPass::kAsIs, deferred, kCapacity, &count);
  if (answer == kYes) return kMayPrint;
  if (answer != kNo) return kLookAgain;
  switch (rhinobox_plain::plain_answer(data, size)) {
    case Plain::kText:
      return kPlainText;
    case Plain::kBytes:
      return kPlainBytes;
    default:
      return kBuiltin;
  }
}

// The plain checks alone, for the tests that compare them with the Python ones: magic_plain.h's
// numbers (text pass: 0 not text, 1 as is, 2 converted; plain answer: 0 undecided, 1 text, 2 bytes).
int rb_text_pass(const unsigned char* data, size_t size) {
  return static_cast<int>(rhinobox_plain::text_pass(data, size));
}

int rb_plain_answer(const unsigned char* data, size_t size) {
  return static_cast<int>(rhinobox_plain::plain_answer(data, size));
}

// What the two steps decide, for the tests that compare them with the Python filter's: the candidate
// tests (-1: RE2 gave up; more than `capacity`: -2), one condition (0 no, 1 holds, 2 unknown), and one
// test's gate (0 no, 1 may print, 2 unknown).
int rb_candidates(void* handle, const unsigned char* data, size_t size, int text, int* out, size_t capacity) {
  const Filter* filter = static_cast<const Filter*>(handle);
  const Buffer buffer{data, size};
  Candidates found(filter->roots.size());
  if (!filter->candidates(buffer, text != 0, found)) return -1;
  if (found.list().size() > capacity) return -2;
  std::copy(found.list().begin(), found.list().end(), out);
  return static_cast<int>(found.list().size());
}

int rb_condition_holds(void* handle, int condition, const unsigned char* data, size_t size) {
  const Filter* filter = static_cast<const Filter*>(handle);
  if (!known_condition(filter, condition)) return -1;
  const Buffer buffer{data, size};
  const Tri answer = check(filter->conditions[condition], buffer);
  return answer == kTrue ? 1 : answer == kFalse ? 0 : 2;
}

int rb_gate_may_print(void* handle, int test, const unsigned char* data, size_t size) {
  const Filter* filter = static_cast<const Filter*>(handle);
  if (!known_test(filter, test)) return -1;
  if (filter->roots[test] < 0) return kYes;
  const Buffer buffer{data, size};
  const Tri answer = filter->may_print(filter->roots[test], buffer);
  return answer == kTrue ? 1 : answer == kFalse ? 0 : 2;
}

}  // extern "C"
#pragma GCC visibility pop
