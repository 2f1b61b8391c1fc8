// A C interface to toml++ (Debian's libtomlplusplus-dev, used header-only): parse a document, then walk its
// tree. KevdConfig copies the tree into Swift values at once and frees the document; nothing here is kept.
#ifndef CKEVD_TOML_H
#define CKEVD_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A parsed document (a toml::table), and one node of it (a toml::node). Nodes live as long as the document.
typedef struct kevd_toml_document kevd_toml_document;
typedef struct kevd_toml_node kevd_toml_node;

typedef enum {
    KEVD_TOML_TABLE = 1,
    KEVD_TOML_ARRAY,
    KEVD_TOML_STRING,
    KEVD_TOML_INTEGER,
    KEVD_TOML_FLOAT,
    KEVD_TOML_BOOLEAN,
    KEVD_TOML_DATE,
    KEVD_TOML_TIME,
    KEVD_TOML_DATE_TIME,
} kevd_toml_type;

/// Where and why a document did not parse. The message is toml++'s description, cut to fit.
typedef struct {
    uint32_t line;
    uint32_t column;
    char message[512];
} kevd_toml_error;

/// Parses `length` bytes of `text` (NUL bytes included: toml++ reports them). Returns NULL and fills `error` when
/// the text is not TOML, or when memory ran out; never throws or aborts on bad input that toml++ reports.
kevd_toml_document *kevd_toml_parse(const char *text, size_t length, kevd_toml_error *error);
void kevd_toml_free(kevd_toml_document *document);

const kevd_toml_node *kevd_toml_root(const kevd_toml_document *document);
kevd_toml_type kevd_toml_type_of(const kevd_toml_node *node);

/// A table's number of keys, an array's number of elements; 0 for any other node.
size_t kevd_toml_count(const kevd_toml_node *node);
/// A table's entries in toml++'s (byte) order of keys: `kevd_toml_count` of them into each buffer. The keys are
/// not NUL-terminated (a quoted key may hold "\u0000"): use their lengths.
void kevd_toml_table_entries(
    const kevd_toml_node *table, const char **keys, size_t *key_lengths, const kevd_toml_node **values);
/// An array's element `index` (< `kevd_toml_count`).
const kevd_toml_node *kevd_toml_array_element(const kevd_toml_node *array, size_t index);

/// A string's bytes (not NUL-terminated), valid while the document lives.
const char *kevd_toml_string(const kevd_toml_node *node, size_t *length);
int64_t kevd_toml_integer(const kevd_toml_node *node);
double kevd_toml_float(const kevd_toml_node *node);
bool kevd_toml_boolean(const kevd_toml_node *node);

#ifdef __cplusplus
}
#endif

#endif
