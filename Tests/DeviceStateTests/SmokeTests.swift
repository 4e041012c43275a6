import XCTest
import DeviceState
final class SmokeTests: XCTestCase { func testNothing() {} }
