// Motion correction from Slicer's own ITK (5.4, from slicer-core-sdk): the registration callback
// the Perfusion Maps logic hands to the library recovers a known rigid motion of a head-like
// image within 0.02 rad and 0.3 mm (../shared/notes/itk.md), and a bad call returns an error
// status instead of throwing.
#include <cmath>
#include <iostream>
#include <vector>

#include "imhost_itk.hpp"

namespace {
float Head(const double p[3]) {
    const double r = std::sqrt(std::pow(p[0] / 38.0, 2) + std::pow(p[1] / 44.0, 2) + std::pow(p[2] / 26.0, 2));
    const double shell = 1000.0 / (1.0 + std::pow(std::abs(r - 0.92) / 0.03, 4));
    auto blob = [&](double cx, double cy, double cz, double s, double a) {
        return a * std::exp(-((p[0] - cx) * (p[0] - cx) + (p[1] - cy) * (p[1] - cy) + (p[2] - cz) * (p[2] - cz)) / (2 * s * s));
    };
    return static_cast<float>(shell + blob(10, -8, 3, 6, 60) + blob(-12, 14, -5, 8, 40) + blob(0, 20, 8, 5, 80));
}
}  // namespace

int main() {
    const int64_t size[3] = {48, 48, 24};
    imh_geometry g{};
    g.spacing[0] = 2.0, g.spacing[1] = 2.0, g.spacing[2] = 2.5;
    for (int a = 0; a < 3; ++a) g.origin[a] = -0.5 * static_cast<double>(size[a] - 1) * g.spacing[a];
    g.direction[0] = g.direction[4] = g.direction[8] = 1.0;
    const double angles[3] = {0.03, -0.02, 0.05}, shift[3] = {2.5, -1.5, 1.0};
    // ITK's Euler3D rotation: R = Rz·Rx·Ry.
    const double a = angles[0], b = angles[1], c = angles[2];
    const double rx[3][3] = {{1, 0, 0}, {0, std::cos(a), -std::sin(a)}, {0, std::sin(a), std::cos(a)}};
    const double ry[3][3] = {{std::cos(b), 0, std::sin(b)}, {0, 1, 0}, {-std::sin(b), 0, std::cos(b)}};
    const double rz[3][3] = {{std::cos(c), -std::sin(c), 0}, {std::sin(c), std::cos(c), 0}, {0, 0, 1}};
    double rxy[3][3] = {}, r[3][3] = {};
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 3; ++k) rxy[i][j] += rx[i][k] * ry[k][j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 3; ++k) r[i][j] += rz[i][k] * rxy[k][j];
    const std::size_t n = static_cast<std::size_t>(size[0] * size[1] * size[2]);
    std::vector<float> fixed(n), moving(n), resampled(n);
    for (int64_t k = 0; k < size[2]; ++k)
        for (int64_t j = 0; j < size[1]; ++j)
            for (int64_t i = 0; i < size[0]; ++i) {
                const double p[3] = {g.origin[0] + i * g.spacing[0], g.origin[1] + j * g.spacing[1], g.origin[2] + k * g.spacing[2]};
                const std::size_t v = static_cast<std::size_t>(i + size[0] * (j + size[1] * k));
                fixed[v] = Head(p);
                // moving(q) = head(Rᵀ·(q − t)): the head moved by T(p) = R·p + t.
                const double d[3] = {p[0] - shift[0], p[1] - shift[1], p[2] - shift[2]};
                double q[3] = {};
                for (int x = 0; x < 3; ++x)
                    for (int y = 0; y < 3; ++y) q[x] += r[y][x] * d[y];
                moving[v] = Head(q);
            }
    double motion[6];
    int failures = 0;
    const uint32_t status =
        imhost::itk::registration_callback(nullptr, fixed.data(), moving.data(), size, &g, motion, resampled.data());
    if (status != IMH_STATUS_OK) {
        std::cerr << "registration failed with status " << status << "\n";
        return 1;
    }
    std::cout << imhost::itk::description() << ": angles " << motion[0] << " " << motion[1] << " " << motion[2]
              << ", translation " << motion[3] << " " << motion[4] << " " << motion[5] << "\n";
    for (int x = 0; x < 3; ++x) {
        if (std::abs(motion[x] - angles[x]) >= 0.02) std::cerr << "angle " << x << " off\n", ++failures;
        if (std::abs(motion[3 + x] - shift[x]) >= 0.3) std::cerr << "translation " << x << " off\n", ++failures;
    }
    if (imhost::itk::description().find("ITK 5.4") != 0) std::cerr << "not Slicer's ITK 5.4\n", ++failures;
    // A NULL buffer is a status, not an exception through the library.
    if (imhost::itk::registration_callback(nullptr, nullptr, moving.data(), size, &g, motion, resampled.data()) == IMH_STATUS_OK)
        std::cerr << "NULL buffer accepted\n", ++failures;
    if (failures == 0) std::cout << "Slicer's ITK recovers the known motion\n";
    return failures ? 1 : 0;
}
