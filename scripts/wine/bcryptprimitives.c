/*
 * bcryptprimitives.dll for Wine 8.0, which does not ship it.
 *
 * Rust's std on Windows takes its random numbers (HashMap seeds) from
 * ProcessPrng in bcryptprimitives.dll, so a Rust .exe does not load under
 * Wine 8.0 without this DLL. It forwards to RtlGenRandom (advapi32's
 * SystemFunction036), which Wine implements. Test-only: scripts/test-windows
 * builds it with mingw-w64 and installs it into its own Wine prefix.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
