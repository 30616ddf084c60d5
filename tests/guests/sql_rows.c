/* SQLite on the guest's filesystem: 10,000 rows in one transaction, an
 * index and a query that uses it, a transaction rolled back, the database
 * closed and reopened, integrity_check, VACUUM after deleting half of it.
 * SQLite sees __wasi__ and uses its unix-dotfile VFS (journal files and
 * lock directories next to the database). argv[1] is the working root. */
#include "guest.h"
#include "sqlite3.h"

#include <dirent.h>
#include <sys/stat.h>

static char root[512] = "/";
static const char *P(const char *rel) {
    static char bufs[2][1024];
    static int next = 0;
    char *b = bufs[next];
    next ^= 1;
    size_t n = strlen(root);
    snprintf(b, sizeof bufs[0], "%s%s%s", root, (n && root[n - 1] == '/') ? "" : "/", rel);
    return b;
}

static sqlite3 *db;

static void exec(const char *what, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    SHOW(what, "%s", rc == SQLITE_OK ? "ok" : (err ? err : sqlite3_errstr(rc)));
    sqlite3_free(err);
}

/* The first column of the first row, as text. */
static void query(const char *what, const char *sql) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        SHOW(what, "prepare: %s", sqlite3_errmsg(db));
        return;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        char line[256] = "";
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *t = sqlite3_column_text(st, i);
            if (i) strcat(line, " ");
            strncat(line, t ? (const char *)t : "NULL", 60);
        }
        SHOW(what, "%s", line);
    } else {
        SHOW(what, "%s", rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
}

static void open_db(const char *what) {
    int rc = sqlite3_open(P("sql/rows.db"), &db);
    SHOW(what, "%s", rc == SQLITE_OK ? "ok" : sqlite3_errstr(rc));
}

static void close_db(const char *what) {
    SHOW(what, "%s", sqlite3_close(db) == SQLITE_OK ? "ok" : "busy");
    db = NULL;
}

/* What SQLite left next to the database, sorted. */
static void leftovers(const char *what) {
    DIR *d = opendir(P("sql"));
    char names[512] = "";
    struct dirent *e;
    char *all[16];
    int n = 0;
    while (d && (e = readdir(d)) != NULL && n < 16) {
        if (e->d_name[0] != '.') all[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(all[j], all[i]) < 0) {
                char *t = all[i];
                all[i] = all[j];
                all[j] = t;
            }
    for (int i = 0; i < n; i++) {
        if (i) strcat(names, " ");
        strncat(names, all[i], 100);
        free(all[i]);
    }
    SHOW(what, "[%s]", names);
}

static long long file_size(void) {
    struct stat st;
    return stat(P("sql/rows.db"), &st) == 0 ? (long long)st.st_size : -1;
}

int main(int argc, char **argv) {
    if (argc > 1) snprintf(root, sizeof root, "%s", argv[1]);
    printf("sql_rows: root=%s\n", root);
    SHOW("sqlite3_threadsafe", "%d", sqlite3_threadsafe());
    TRY("mkdir sql", mkdir(P("sql"), 0755));
    open_db("open sql/rows.db");
    exec("create table",
         "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, grp INTEGER, v REAL, b BLOB)");

    exec("begin", "BEGIN");
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO t(name, grp, v, b) VALUES (?, ?, ?, zeroblob(?))", -1,
                       &ins, NULL);
    int inserted = 0;
    for (int i = 0; i < 10000; i++) {
        char name[32];
        snprintf(name, sizeof name, "row-%05d", (i * 7919) % 10000);
        sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(ins, 2, i % 37);
        sqlite3_bind_double(ins, 3, i * 0.5);
        sqlite3_bind_int(ins, 4, (i % 13) * 17);
        if (sqlite3_step(ins) == SQLITE_DONE) inserted++;
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    SHOW("inserted", "%d", inserted);
    exec("commit", "COMMIT");
    query("count, sum(grp), total(v)", "SELECT count(*), sum(grp), total(v) FROM t");

    exec("create index on grp", "CREATE INDEX t_grp ON t(grp)");
    sqlite3_stmt *plan;
    int uses_index = 0;
    sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN SELECT count(*) FROM t WHERE grp = 7", -1, &plan,
                       NULL);
    while (sqlite3_step(plan) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(plan, 3);
        if (detail && strstr(detail, "INDEX t_grp")) uses_index = 1;
    }
    sqlite3_finalize(plan);
    SHOW("the query uses the index", "%d", uses_index);
    query("rows in grp 7, sum(id)", "SELECT count(*), sum(id) FROM t WHERE grp = 7");
    query("name of id 1234", "SELECT name FROM t WHERE id = 1234");

    exec("begin", "BEGIN");
    exec("delete the even ids", "DELETE FROM t WHERE id % 2 = 0");
    exec("update the rest", "UPDATE t SET name = 'changed'");
    query("  count inside", "SELECT count(*) FROM t");
    exec("rollback", "ROLLBACK");
    query("count, sum(grp), total(v) after rollback", "SELECT count(*), sum(grp), total(v) FROM t");
    query("  changed names", "SELECT count(*) FROM t WHERE name = 'changed'");
    close_db("close");
    leftovers("  files in sql");

    open_db("reopen");
    query("count, max(id), sum(length(b))", "SELECT count(*), max(id), sum(length(b)) FROM t");
    query("integrity_check", "PRAGMA integrity_check");
    long long before = file_size();
    exec("delete half", "DELETE FROM t WHERE id > 5000");
    exec("vacuum", "VACUUM");
    long long after = file_size();
    SHOW("file shrank", "%d", after > 0 && after < before);
    query("integrity_check", "PRAGMA integrity_check");
    query("count after vacuum", "SELECT count(*) FROM t");
    close_db("close");
    leftovers("  files in sql");

    TRY("unlink sql/rows.db", unlink(P("sql/rows.db")));
    TRY("rmdir sql", rmdir(P("sql")));
    printf("sql_rows: done\n");
    return 0;
}
