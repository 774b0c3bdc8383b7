// libmagic's view of plain text and plain bytes, as rhinobox/ingest/magic_plain.py and sniff.py's
// `_text_pass` decide it: the same answers, for the compiled filter's one-call first look.

#pragma once

#include <cstddef>

namespace rhinobox_plain {

// sniff.py `_text_pass`: libmagic's text tests read the buffer as it is (kAsIs), not at all (kNotText),
// or on a converted copy (kConverted).
enum class TextPass { kNotText, kAsIs, kConverted };
TextPass text_pass(const unsigned char* data, size_t size);

// magic_plain.py `plain_answer`: "text/plain" (kText), "application/octet-stream" (kBytes), or libmagic must tell.
enum class Plain { kUndecided, kText, kBytes };
Plain plain_answer(const unsigned char* data, size_t size);

}  // namespace rhinobox_plain
