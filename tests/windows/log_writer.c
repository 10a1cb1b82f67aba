/*
 * log_writer.exe OP PATH [ARG]: changes a log file the way MicroSIP and its user can,
 * with Windows file calls, so that Wine checks them against the handles callhook.exe
 * holds (its sharing mode). Exit status 0 on success, else 10 + the step that failed,
 * with GetLastError() on stderr. Used by tests/windows.rs; built by scripts/test with
 * MinGW; never shipped.
 *
 *   append PATH FILE       appends FILE's bytes (opened like PJSIP's log writer:
 *                          write access, read and write shared)
 *   truncate PATH FILE     CREATE_ALWAYS (MicroSIP's start), then writes FILE's bytes
 *   rename PATH NEWPATH    MoveFileEx with MOVEFILE_REPLACE_EXISTING
 *   delete PATH            DeleteFile
 */
#include <windows.h>
#include <stdio.h>
#include <string.h>

static int fail(int step, const char *what)
{
    fprintf(stderr, "log_writer: %s failed: error %lu\n", what, GetLastError());
    return 10 + step;
}

static int write_from(HANDLE file, const char *source)
{
    FILE *in = fopen(source, "rb");
    if (in == NULL) {
        return fail(1, "open source");
    }
    char buffer[65536];
    size_t got;
    while ((got = fread(buffer, 1, sizeof buffer, in)) > 0) {
        DWORD written = 0;
        if (!WriteFile(file, buffer, (DWORD)got, &written, NULL) || written != got) {
            fclose(in);
            return fail(2, "WriteFile");
        }
    }
    fclose(in);
    return 0;
}

static int open_and_write(const char *path, const char *source, DWORD disposition)
{
    HANDLE file = CreateFileA(path, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                              disposition, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) {
        return fail(3, "CreateFile");
    }
    if (disposition == OPEN_ALWAYS && SetFilePointer(file, 0, NULL, FILE_END) == INVALID_SET_FILE_POINTER) {
        CloseHandle(file);
        return fail(4, "SetFilePointer");
    }
    int status = write_from(file, source);
    CloseHandle(file);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: log_writer append|truncate|rename|delete PATH [ARG]\n");
        return 2;
    }
    const char *op = argv[1];
    const char *path = argv[2];
    if (strcmp(op, "append") == 0 && argc == 4) {
        return open_and_write(path, argv[3], OPEN_ALWAYS);
    }
    if (strcmp(op, "truncate") == 0 && argc == 4) {
        return open_and_write(path, argv[3], CREATE_ALWAYS);
    }
    if (strcmp(op, "rename") == 0 && argc == 4) {
        return MoveFileExA(path, argv[3], MOVEFILE_REPLACE_EXISTING) ? 0 : fail(5, "MoveFileEx");
    }
    if (strcmp(op, "delete") == 0 && argc == 3) {
        return DeleteFileA(path) ? 0 : fail(6, "DeleteFile");
    }
    fprintf(stderr, "log_writer: unknown operation %s\n", op);
    return 2;
}
