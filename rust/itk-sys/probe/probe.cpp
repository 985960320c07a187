#include "itkImage.h"
int main() { return itk::Image<float, 3>::New().IsNull(); }
