// magic_plain.py and sniff.py's `_text_pass` in C++ (see magic_plain.h); the Python is the reference
// and tests/test_magic_native.py holds the two to the same answers. No CPython API is used.

#include "magic_plain.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace rhinobox_plain {
namespace {

bool starts_with(const unsigned char* data, size_t size, const char* prefix, size_t length) {
  return size >= length && std::memcmp(data, prefix, length) == 0;
}

// sniff.py `_UNICODE_MARKS`: UTF-16/32 byte-order marks and UTF-7.
bool unicode_mark(const unsigned char* data, size_t size) {
  return starts_with(data, size, "\xff\xfe", 2) || starts_with(data, size, "\xfe\xff", 2) ||
         starts_with(data, size, "\x00\x00\xfe\xff", 4) || starts_with(data, size, "+/v", 3);
}

// magic_plain.py `_OTHER_STARTS`: the marks above, a UTF-8 BOM, a compound document.
bool other_start(const unsigned char* data, size_t size) {
  return unicode_mark(data, size) || starts_with(data, size, "\xef\xbb\xbf", 3) ||
         starts_with(data, size, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8);
}

bool is_ascii(const unsigned char* data, size_t size) {
  unsigned char any = 0;
  for (size_t i = 0; i < size; ++i) any |= data[i];  // branchless: vectorised
  return (any & 0x80) == 0;
}

// Python's strict UTF-8 decoder: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(const unsigned char* data, size_t size) {
  size_t i = 0;
  while (i < size) {
    const unsigned char lead = data[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length = 0;
    unsigned char low = 0x80, high = 0xbf;  // the second byte's range
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead == 0xe0) low = 0xa0;
      if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead == 0xf0) low = 0x90;
      if (lead == 0xf4) high = 0x8f;
    } else {
      return false;
    }
    if (size - i < length || data[i + 1] < low || data[i + 1] > high) return false;
    for (size_t k = 2; k < length; ++k) {
      if ((data[i + k] & 0xc0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

bool has_nul(const unsigned char* data, size_t size) { return std::memchr(data, 0, size) != nullptr; }

// A NUL before the trailing NULs (`b"\0" in data.rstrip(b"\0")`).
bool nul_inside(const unsigned char* data, size_t size) {
  size_t end = size;
  while (end > 0 && data[end - 1] == 0) --end;
  return has_nul(data, end);
}

// encoding.c `text_chars`: of the bytes under 0x80, ASCII text is BEL to CR, ESC and the printable ones.
// Bitwise, not short-circuit: the loops over it vectorise.
unsigned char not_text_byte(unsigned char byte) {
  const unsigned char low = byte < 7;
  const unsigned char control = static_cast<unsigned char>(static_cast<unsigned char>(byte - 14) < 18) & (byte != 27);
  return low | control | (byte == 127);
}

bool is_text(const unsigned char* data, size_t size) {
  constexpr size_t kChunk = 64;
  for (size_t start = 0; start < size; start += kChunk) {  // no early exit inside a chunk: vectorised
    const size_t end = std::min(size, start + kChunk);
    unsigned char bad = 0;
    for (size_t i = start; i < end; ++i) bad |= not_text_byte(data[i]);
    if (bad) return false;
  }
  return is_ascii(data, size) || valid_utf8(data, size);
}

bool json_space(unsigned char byte) { return byte == ' ' || byte == '\t' || byte == '\n' || byte == '\r'; }

bool may_be_json(const unsigned char* data, size_t size) {
  size_t at = 0;
  while (at < size && json_space(data[at])) ++at;
  return at < size && (data[at] == '{' || data[at] == '[');
}

bool c_space(unsigned char byte) { return byte == ' ' || (byte >= '\t' && byte <= '\r'); }

// is_tar.c `from_oct` as magic_plain.py `_from_octal` reads it; -1: not a number.
int64_t from_octal(const unsigned char* data, size_t size, size_t at, int digits) {
  while (at < size && c_space(data[at])) {
    ++at;
    if (digits == 0) return -1;
    --digits;
  }
  int64_t value = 0;
  while (digits > 0 && at < size && data[at] >= '0' && data[at] <= '7') {
    value = (value << 3) | (data[at] - '0');
    ++at;
    --digits;
  }
  if (digits > 0 && at < size && data[at] != 0 && !c_space(data[at])) return -1;
  return value;
}

constexpr size_t kTarBlock = 512;
constexpr size_t kChecksumAt = 148;
constexpr int kChecksumDigits = 8;

bool may_be_tar(const unsigned char* data, size_t size) {
  if (size < kTarBlock) return false;
  const int64_t recorded = from_octal(data, size, kChecksumAt, kChecksumDigits);
  if (recorded < 0) return false;
  int64_t total = ' ' * kChecksumDigits;
  for (size_t i = 0; i < kTarBlock; ++i) {
    if (i < kChecksumAt || i >= kChecksumAt + kChecksumDigits) total += data[i];
  }
  return total == recorded;
}

constexpr int kCsvLines = 10;  // is_csv.c CSV_LINES

// magic_plain.py `_may_be_csv`: the same count of commas on the first lines, or a quote among them.
bool may_be_csv(const unsigned char* data, size_t size) {
  size_t newlines[kCsvLines];
  int lines = 0;
  for (size_t at = 0; lines < kCsvLines;) {
    const void* found = at < size ? std::memchr(data + at, '\n', size - at) : nullptr;
    if (found == nullptr) break;
    newlines[lines] = static_cast<size_t>(static_cast<const unsigned char*>(found) - data);
    at = newlines[lines++] + 1;
  }
  const size_t counted_end = lines ? newlines[lines - 1] + 1 : 0;
  if (std::memchr(data, '"', counted_end) != nullptr) return true;
  size_t fields = 0;
  size_t start = 0;
  for (int number = 1; number <= lines; ++number) {
    size_t commas = 0;
    for (size_t i = start; i < newlines[number - 1]; ++i) commas += data[i] == ',';
    start = newlines[number - 1] + 1;
    if (number == kCsvLines) return fields != 0 && fields == commas;
    if (fields == 0) {
      if (commas == 0) return false;
      fields = commas;
    } else if (fields != commas) {
      return false;
    }
  }
  return fields != 0 && lines > 2;
}

}  // namespace

TextPass text_pass(const unsigned char* data, size_t size) {
  if (is_ascii(data, size)) return TextPass::kAsIs;
  if (has_nul(data, size) && !unicode_mark(data, size)) {
    return nul_inside(data, size) ? TextPass::kNotText : TextPass::kConverted;
  }
  if (starts_with(data, size, "\xef\xbb\xbf", 3)) return TextPass::kConverted;
  return valid_utf8(data, size) ? TextPass::kAsIs : TextPass::kConverted;
}

Plain plain_answer(const unsigned char* data, size_t size) {
  if (size < 2 || other_start(data, size) || may_be_tar(data, size) || may_be_json(data, size)) {
    return Plain::kUndecided;
  }
  if (has_nul(data, size)) return nul_inside(data, size) ? Plain::kBytes : Plain::kUndecided;
  if (!is_text(data, size) || may_be_csv(data, size)) return Plain::kUndecided;
  return Plain::kText;
}

}  // namespace rhinobox_plain
