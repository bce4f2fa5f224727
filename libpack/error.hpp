// Error type of libpack: every failure is thrown as moepack::Error with a message that
// names the file and the tensor or expert involved. The library never prints or exits;
// tools catch Error at their boundary and turn it into a message and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moepack {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Concatenates any streamable values into one string.
template <class... Parts>
std::string concat(const Parts&... parts) {
    std::ostringstream out;
    (out << ... << parts);
    return out.str();
}

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    throw Error(concat(parts...));
}

}  // namespace moepack
